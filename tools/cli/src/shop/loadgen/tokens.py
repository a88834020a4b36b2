"""Bearer tokens for the load generator's customers.

The gateway takes the customer from the caller's token, so a load run that wants
many customers needs a token per customer: with the issuer's signing key
(``--token-key``, what ``shop up``/the demo/the lab generate, or the chart's demo
issuer in a cluster) it mints one per customer on first use. With one ready-made
token (``--token``) every call is that token's customer.
"""

from __future__ import annotations

from typing import Protocol

from shop.credentials import TokenIssuer

Metadata = tuple[tuple[str, str], ...]


class CustomerTokens(Protocol):
    def metadata(self, customer: str) -> Metadata:
        """The call metadata that authenticates ``customer``."""
        ...


class IssuedTokens:
    def __init__(self, issuer: TokenIssuer) -> None:
        self._issuer = issuer
        self._cache: dict[str, Metadata] = {}

    def metadata(self, customer: str) -> Metadata:
        found = self._cache.get(customer)
        if found is None:
            found = (("authorization", f"Bearer {self._issuer.token(customer)}"),)
            self._cache[customer] = found
        return found


class FixedToken:
    def __init__(self, token: str) -> None:
        self._metadata: Metadata = (("authorization", f"Bearer {token}"),)

    def metadata(self, customer: str) -> Metadata:
        return self._metadata


class NoTokens:
    """For targets that need none (an Echo server); the gateway will refuse calls."""

    def metadata(self, customer: str) -> Metadata:
        return ()
