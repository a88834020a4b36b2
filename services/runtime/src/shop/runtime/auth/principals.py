"""The identities a call can carry, and the errors for calls without a good one."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from shop.runtime.callscope import current_scope
from shop.runtime.errors import ShopError

ADMIN_SCOPE = "shop.admin"


@dataclass(frozen=True)
class EndUser:
    """A person, from a verified bearer token: ``subject`` is the customer id."""

    subject: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


@dataclass(frozen=True)
class InternalCaller:
    """Another shop service, from a verified caller token: ``service`` is its name."""

    service: str


Principal = EndUser | InternalCaller


class Unauthenticated(ShopError):
    """No credential, or one that does not verify. The message says which, never why
    in cryptographic detail."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ShopError):
    """A verified caller that this method does not admit."""

    code = grpc.StatusCode.PERMISSION_DENIED


def current_end_user() -> EndUser:
    """The end user of the call being handled (set by the server interceptor).

    Raises Unauthenticated if there is none, so a handler can never fall back to a
    customer id taken from the request by mistake."""
    scope = current_scope.get()
    principal = None if scope is None else scope.principal
    if not isinstance(principal, EndUser):
        raise Unauthenticated("this call needs an end user's bearer token")
    return principal
