"""Full gRPC names of the shop's services, read off the generated descriptors.

A caller names its callee by these (channel targets, access rules, health checks)
without importing the callee's code: the gateway depends on the contract only.
"""

from __future__ import annotations

from shop.v1 import echo_pb2, gateway_pb2, inventory_pb2, orders_pb2

GATEWAY: str = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
ORDERS: str = orders_pb2.DESCRIPTOR.services_by_name["Orders"].full_name
INVENTORY: str = inventory_pb2.DESCRIPTOR.services_by_name["Inventory"].full_name
# The benchmark's echo hop: gRPC's own cost, no domain logic.
ECHO: str = echo_pb2.DESCRIPTOR.services_by_name["Echo"].full_name
