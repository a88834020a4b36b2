"""Orders: idempotent order placement over inventory reservations."""
