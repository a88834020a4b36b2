"""Credentials on a test's calls: an end user's bearer token from the demo issuer, a
shop service's caller token, and channels that add them to every call."""

from __future__ import annotations

from typing import Any

import grpc

from shop.credentials import LocalCredentials
from shop.runtime.auth.internal import CALLER_TOKEN_HEADER, CallerTokens, read_internal_keys

Metadata = tuple[tuple[str, str], ...]

# The end user every in-process gateway call is made for (tests/gateway).
CUSTOMER = "c1"


def user_metadata(credentials: LocalCredentials, customer: str, *, admin: bool = False) -> Metadata:
    """An end user's (or administrator's) bearer token from the demo issuer."""
    return (("authorization", f"Bearer {credentials.issuer().token(customer, admin=admin)}"),)


def caller_metadata(credentials: LocalCredentials, caller: str, callee_service: str) -> Metadata:
    """The caller token shop service ``caller`` sends to ``callee_service`` (full name)."""
    keys = read_internal_keys(str(credentials.internal_keys_dir))
    return ((CALLER_TOKEN_HEADER, CallerTokens(caller, keys[caller]).token(callee_service)),)


class _AddMetadata:
    """Adds fixed metadata (credentials) to every call of a test's channel."""

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata

    def _details(self, details: Any) -> Any:
        merged = grpc.aio.Metadata(*(details.metadata or ()), *self.metadata)
        return details._replace(metadata=merged)


# grpc.aio files an interceptor under one call type only (the first base it matches),
# so unary and streaming calls each need their own. grpc ships no type hints: its
# interceptor bases are Any to mypy.
class _AddUnaryMetadata(_AddMetadata, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AddStreamMetadata(_AddMetadata, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def channel_with(address: str, *metadata: Metadata, **kwargs: Any) -> grpc.aio.Channel:
    """An insecure channel whose calls carry ``metadata`` (e.g. user and caller tokens)."""
    combined = tuple(item for part in metadata for item in part)
    interceptors = [_AddUnaryMetadata(combined), _AddStreamMetadata(combined)]
    return grpc.aio.insecure_channel(address, interceptors=interceptors, **kwargs)
