"""The shop's API contract beside its generated code (``shop.v1``): the names of the
services and the rules for order lines that every hop applies the same way."""
