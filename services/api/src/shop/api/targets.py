"""Where a caller finds the shop's services: one variable per callee.

They sit with the services' names rather than with a service: the gateway calls
orders and inventory, orders calls inventory too, and both must read the same
variable with the same default.
"""

from __future__ import annotations

from shop.runtime.config import target_setting

ORDERS_TARGET = target_setting(
    "SHOP_ORDERS_TARGET", "127.0.0.1:50052", "where the orders service is"
)
INVENTORY_TARGET = target_setting(
    "SHOP_INVENTORY_TARGET", "127.0.0.1:50053", "where the inventory service is"
)
