"""Retried attempts summed over a run in which pod processes restart."""

from __future__ import annotations

from shop.lab.retries import RetryTally, parse_retried

EXPOSITION = """\
# HELP grpc_server_retried_total RPC attempts that arrived as a retry.
# TYPE grpc_server_retried_total counter
grpc_server_retried_total{grpc_method="Reserve",grpc_service="shop.v1.Inventory"} 3.0
grpc_server_retried_total{grpc_method="Release",grpc_service="shop.v1.Inventory"} 2.0
grpc_server_retried_created{grpc_method="Reserve",grpc_service="shop.v1.Inventory"} 1.7e9
grpc_server_started_total{grpc_method="Reserve",grpc_service="shop.v1.Inventory"} 40.0
"""


def test_the_counter_is_summed_over_its_labels_only() -> None:
    assert parse_retried(EXPOSITION) == 5
    assert parse_retried("") == 0


def test_counts_survive_restarts_and_exclude_what_came_before() -> None:
    tally = RetryTally()
    tally.begin({"inventory-0": 4, "inventory-1": 1, "orders-0": None})
    tally.process_ends("inventory-0", 10)  # rollout: 6 during the run, then a new process
    tally.process_ends("inventory-0", 2)  # the new process counted from zero
    tally.process_ends("inventory-1", 1)  # nothing during the run
    tally.process_ends("inventory-2", 3)  # started during the run
    tally.process_ends("orders-0", None)  # unreadable: counts nothing
    assert tally.totals() == {"inventory": 11}
