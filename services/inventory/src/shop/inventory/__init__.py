"""Inventory: the catalog and its stock, with atomic, idempotent reservations."""
