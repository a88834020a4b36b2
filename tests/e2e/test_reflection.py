"""Server reflection on every service, read with a generic client.

No shop stubs here: what a tool such as grpcurl sees is what counts. The reflection
descriptor database fetches file descriptors from the server, and a descriptor pool
built on it must resolve methods, their message types and imported files.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from shop.local.cluster import LocalCluster

from ..support.clusters import ClusterFactory

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"

EXPECTED = {
    "gateway": "shop.v1.Gateway",
    "orders": "shop.v1.Orders",
    "inventory": "shop.v1.Inventory",
}

# One method per service whose request fields prove the descriptors resolve.
METHODS = {
    "gateway": (
        "shop.v1.Gateway",
        "PlaceOrder",
        "shop.v1.PlaceOrderRequest",
        ["items", "idempotency_key"],  # the customer is the bearer token's subject
    ),
    "orders": (
        "shop.v1.Orders",
        "CreateOrder",
        "shop.v1.CreateOrderRequest",
        ["idempotency_key", "customer_id", "items"],
    ),
    "inventory": (
        "shop.v1.Inventory",
        "Reserve",
        "shop.v1.ReserveRequest",
        ["reservation_id", "items"],
    ),
}


@pytest.fixture(scope="module")
def cluster(module_cluster_factory: ClusterFactory) -> LocalCluster:
    return module_cluster_factory(gateway=1, orders=1, inventory=1)


def _address(cluster: LocalCluster, service: str) -> str:
    return cluster.replicas_of(service)[0].grpc_addr


@pytest.mark.parametrize("service", list(EXPECTED))
def test_reflection_lists_every_service(cluster: LocalCluster, service: str) -> None:
    with grpc.insecure_channel(_address(cluster, service)) as channel:
        names = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert names == {EXPECTED[service], HEALTH, REFLECTION}


@pytest.mark.parametrize("service", list(METHODS))
def test_method_descriptors_resolve_through_reflection(cluster: LocalCluster, service: str) -> None:
    service_name, method_name, input_name, fields = METHODS[service]
    with grpc.insecure_channel(_address(cluster, service)) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        input_type = method.input_type
        assert input_type is not None, method.full_name
        assert input_type.full_name == input_name
        assert [f.name for f in input_type.fields] == fields
        # items is declared in common.proto: the import resolves through reflection too.
        item_type = input_type.fields_by_name["items"].message_type
        assert item_type is not None, "items is not a message field"
        assert item_type.full_name == "shop.v1.OrderItem"
        assert [f.name for f in item_type.fields] == ["sku", "quantity"]
        assert method.output_type.fields  # the response type resolves as well
        # The health service is described as well, from its own file.
        watch = pool.FindServiceByName(HEALTH).methods_by_name["Watch"]
        assert watch.server_streaming


def test_raw_reflection_stream_answers_per_request(cluster: LocalCluster) -> None:
    """The bare ServerReflectionInfo stream: list services, then a symbol lookup,
    and an unknown symbol gets NOT_FOUND in the stream (the call stays healthy)."""
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="shop.v1.Gateway"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="shop.v1.Nope"),
    ]
    with grpc.insecure_channel(cluster.gateway_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed, found, missing = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    assert {s.name for s in listed.list_services_response.service} == {
        "shop.v1.Gateway",
        HEALTH,
        REFLECTION,
    }
    assert found.file_descriptor_response.file_descriptor_proto
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
