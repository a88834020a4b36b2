"""mode=istio's AuthorizationPolicies decide per caller and gRPC method.

The rendered policies are evaluated the way Istio evaluates an ALLOW policy (a
request passes when one rule matches its principal, port and path; paths match
exactly, by prefix "x*", by suffix "*x" or "*" for any), and the paths are checked
against the services declared in proto/ and the calls the services' code makes.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest

from ..support.chart import ChartRenderer
from ..support.paths import REPO

NS = "shop-ns"
GRPC, METRICS = 50051, 9464
Policy = dict[str, Any]

HEALTH = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")
REFLECTION = (
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)
ADMIN = "cluster.local/ns/ops/sa/stock-admin"


def principal(component: str) -> str:
    return f"cluster.local/ns/{NS}/sa/shop-{component}"


def proto_methods() -> dict[str, list[str]]:
    """gRPC service -> its methods' paths, from proto/ (e.g. shop.v1.Orders)."""
    services: dict[str, list[str]] = {}
    for proto in sorted((REPO / "proto").rglob("*.proto")):
        text = proto.read_text()
        package = re.search(r"^package ([\w.]+);", text, flags=re.MULTILINE)
        assert package, proto
        for name, body in re.findall(r"^service (\w+) \{(.*?)^\}", text, re.MULTILINE | re.DOTALL):
            services[f"{package[1]}.{name}"] = [
                f"/{package[1]}.{name}/{method}" for method in re.findall(r"\brpc (\w+)", body)
            ]
    return services


def _path_matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return path == pattern


def allows(policy: Policy, caller: str, path: str, port: int) -> bool:
    """Whether the ALLOW policy lets ``caller`` (a principal) call ``path`` on ``port``."""
    assert policy["spec"]["action"] == "ALLOW"
    for rule in policy["spec"]["rules"]:
        sources = rule.get("from")
        if sources is not None and not any(
            caller in source["source"]["principals"] for source in sources
        ):
            continue
        for target in rule.get("to", [{"operation": {}}]):
            operation = target["operation"]
            if "ports" in operation and str(port) not in operation["ports"]:
                continue
            if "paths" in operation and not any(_path_matches(p, path) for p in operation["paths"]):
                continue
            return True
    return False


def _policies(
    render_chart: ChartRenderer, values: dict[str, Any] | None = None
) -> dict[str, Policy]:
    rendered = render_chart("istio", {"loadgen": {"enabled": True}, **(values or {})})
    return {
        p["metadata"]["name"].removeprefix("shop-"): p
        for p in rendered.of_kind("AuthorizationPolicy")
    }


def test_the_evaluator_follows_istio_path_matching() -> None:
    policy: Policy = {
        "spec": {
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": ["a"]}}],
                    "to": [{"operation": {"paths": ["/x.S/*"]}}],
                },
                {"to": [{"operation": {"ports": ["1"], "paths": ["*/Check"]}}]},
            ],
        }
    }
    assert allows(policy, "a", "/x.S/M", 2)
    assert not allows(policy, "b", "/x.S/M", 2)
    assert not allows(policy, "a", "/x.T/M", 2)
    assert allows(policy, "b", "/y.H/Check", 1)
    assert not allows(policy, "b", "/y.H/Check", 2)


def test_orders_methods_are_for_the_gateway_only(render_chart: ChartRenderer) -> None:
    orders = _policies(render_chart)["orders"]
    methods = proto_methods()["shop.v1.Orders"]
    assert len(methods) >= 5
    for method in methods:
        assert allows(orders, principal("gateway"), method, GRPC), method
        for caller in ("orders", "inventory", "loadgen", "test"):
            assert not allows(orders, principal(caller), method, GRPC), (caller, method)
        assert not allows(orders, ADMIN, method, GRPC)


@pytest.mark.parametrize(
    ("method", "callers"),
    [
        ("Reserve", {"orders"}),
        ("Release", {"orders"}),
        ("ListProducts", {"gateway", "orders"}),
        # Stock administration: no identity of the release, nobody in the mesh by default.
        ("SetStock", set()),
    ],
)
def test_inventory_methods_per_caller(
    method: str, callers: set[str], render_chart: ChartRenderer
) -> None:
    inventory = _policies(render_chart)["inventory"]
    path = f"/shop.v1.Inventory/{method}"
    assert path in proto_methods()["shop.v1.Inventory"]
    for caller in ("gateway", "orders", "inventory", "loadgen", "test"):
        assert allows(inventory, principal(caller), path, GRPC) == (caller in callers), caller
    assert not allows(inventory, ADMIN, path, GRPC)


def test_every_inventory_method_is_covered(render_chart: ChartRenderer) -> None:
    # A method added to the proto must get a decision above (and a rule if anyone calls it).
    decided = {"Reserve", "Release", "ListProducts", "SetStock"}
    declared = {p.rsplit("/", 1)[1] for p in proto_methods()["shop.v1.Inventory"]}
    assert declared == decided


def test_health_is_open_and_reflection_closed(render_chart: ChartRenderer) -> None:
    for component, policy in _policies(render_chart).items():
        for caller in ("gateway", "orders", "inventory", "loadgen", "test"):
            for path in HEALTH:
                assert allows(policy, principal(caller), path, GRPC), (component, caller, path)
            # Server reflection would list every method to any workload of the mesh.
            for path in REFLECTION:
                assert not allows(policy, principal(caller), path, GRPC), (component, path)
        # Prometheus scrapes from outside the mesh, without an identity.
        assert allows(policy, "", "/metrics", METRICS), component


def test_every_path_names_a_declared_method(render_chart: ChartRenderer) -> None:
    declared = proto_methods()
    every_path = {m for methods in declared.values() for m in methods}
    values = {"istio": {"stockAdminPrincipals": [ADMIN]}}
    for component, policy in _policies(render_chart, values).items():
        for rule in policy["spec"]["rules"]:
            for target in rule["to"]:
                for path in target["operation"].get("paths", []):
                    if path.endswith("/*"):
                        service = path[1:-2]
                        assert service in declared or service == "grpc.health.v1.Health", path
                    else:
                        assert path in every_path, (component, path)


def test_every_call_the_services_make_is_allowed(render_chart: ChartRenderer) -> None:
    # The calls in the callers' code (self._orders.CreateOrder(...), ...): a new call
    # the policies do not allow would fail with PERMISSION_DENIED in mode=istio only.
    policies = _policies(render_chart)
    calls = {
        (caller, callee, method)
        for caller in ("gateway", "orders")
        for source in sorted((REPO / "services" / caller / "src" / "shop" / caller).glob("*.py"))
        for callee, method in re.findall(
            r"self\._(orders|inventory)\.([A-Z]\w*)\b", source.read_text()
        )
    }
    assert ("gateway", "orders", "CreateOrder") in calls
    assert ("orders", "inventory", "Reserve") in calls
    for caller, callee, method in sorted(calls):
        path = f"/shop.v1.{callee.capitalize()}/{method}"
        assert allows(policies[callee], principal(caller), path, GRPC), (caller, path)


def test_a_stock_admin_identity_gets_set_stock_only(render_chart: ChartRenderer) -> None:
    inventory = _policies(render_chart, {"istio": {"stockAdminPrincipals": [ADMIN]}})["inventory"]
    assert allows(inventory, ADMIN, "/shop.v1.Inventory/SetStock", GRPC)
    for method in ("Reserve", "Release", "ListProducts"):
        assert not allows(inventory, ADMIN, f"/shop.v1.Inventory/{method}", GRPC), method
    for caller in ("gateway", "orders"):
        assert not allows(inventory, principal(caller), "/shop.v1.Inventory/SetStock", GRPC)


@pytest.mark.parametrize(
    "admin",
    [
        f"cluster.local/ns/{NS}/sa/shop-gateway",
        # Another trust domain names the same ServiceAccount.
        f"example.org/ns/{NS}/sa/shop-orders",
    ],
)
def test_the_services_cannot_be_made_stock_admins(admin: str, render_chart: ChartRenderer) -> None:
    with pytest.raises(
        helm_python.HelmRenderError,
        match=rf"istio.stockAdminPrincipals: {re.escape(admin)} is the \w+ workload of this "
        r"release; SetStock is stock administration",
    ):
        render_chart("istio", {"istio": {"stockAdminPrincipals": [admin]}})
