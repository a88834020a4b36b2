"""Who is calling, and may they: the shop's authentication and authorization.

Three kinds of callers reach a shop service:

- **end users** at the gateway, with a bearer JWT from the deployment's identity
  provider (``authorization: Bearer <token>``), verified against the keys in
  ``SHOP_AUTH_JWKS`` (``bearer``); the token's subject is the customer;
- **administrators**, the same kind of token carrying the ``shop.admin`` scope; only
  stock administration needs one;
- **internal callers** (gateway -> orders -> inventory), which sign a short-lived
  token naming themselves with their own key from ``SHOP_INTERNAL_KEYS_DIR``
  (``internal``), so a callee can refuse what its caller must not do.

Each service declares, per method, who may call it (``policy``); the server
interceptor enforces it before the handler runs. Health and reflection stay open.
"""

from shop.runtime.auth.policy import ADMIN, END_USER, OPEN, Access, AccessPolicy, callers
from shop.runtime.auth.principals import (
    EndUser,
    InternalCaller,
    PermissionDenied,
    Principal,
    Unauthenticated,
    current_end_user,
)

__all__ = [
    "ADMIN",
    "END_USER",
    "OPEN",
    "Access",
    "AccessPolicy",
    "EndUser",
    "InternalCaller",
    "PermissionDenied",
    "Principal",
    "Unauthenticated",
    "callers",
    "current_end_user",
]
