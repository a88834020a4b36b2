"""The inventory's catalog as the tests read it."""

from __future__ import annotations

from shop.v1 import inventory_pb2


def stock_of(reply: inventory_pb2.ListProductsResponse, sku: str) -> int:
    """The stock of ``sku`` on a page of ListProducts (the test asks for every product)."""
    return next(p.stock for p in reply.products if p.sku == sku)
