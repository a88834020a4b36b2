"""Rules for order lines, shared by the three services that receive them.

The gateway checks them first so clients get every violation at the edge; orders
and inventory check again because they are reachable on their own (and a rule
written once cannot drift between the hops).
"""

from __future__ import annotations

from collections.abc import Sequence

from shop.runtime.validation import Violations, echo
from shop.v1 import common_pb2

MAX_ITEMS = 50
MAX_QUANTITY = 1000


def validate_items(violations: Violations, items: Sequence[common_pb2.OrderItem]) -> None:
    if not items:
        violations.add("items", "must contain at least one item")
        return
    if len(items) > MAX_ITEMS:
        # Checking each of thousands of lines would cost time on a request that is
        # refused anyway (and the report would be capped).
        violations.add("items", f"must contain at most {MAX_ITEMS} items, got {len(items)}")
        return
    seen: set[str] = set()
    for index, item in enumerate(items):
        violations.identifier(f"items[{index}].sku", item.sku, max_len=64)
        violations.int_range(f"items[{index}].quantity", item.quantity, 1, MAX_QUANTITY)
        if item.sku in seen:
            violations.add(f"items[{index}].sku", f"{echo(item.sku)} appears more than once")
        seen.add(item.sku)
