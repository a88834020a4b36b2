"""Who may call which method: rules declared by each service, enforced by the runtime.

A service's setup declares a rule for every method it serves
(``runtime.access.protect(SERVICE_NAME, {...})``); the server interceptor asks
:meth:`AccessPolicy.checker` once per method and runs the check before the handler.
A method with no rule is refused, so a new method is closed until someone decides
who may call it. gRPC health (probes, load balancers) and server reflection
(grpcurl) are infrastructure and stay open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from shop.runtime.auth.bearer import BearerSettings, BearerVerifier, bearer_token
from shop.runtime.auth.internal import (
    CALLER_TOKEN_HEADER,
    CallerTokens,
    CallerVerifier,
    read_internal_keys,
)
from shop.runtime.auth.principals import (
    ADMIN_SCOPE,
    PermissionDenied,
    Principal,
    Unauthenticated,
)
from shop.runtime.config import AuthConfig, ConfigError

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Runs before the handler; returns who is calling (None for an open method) or raises.
Check = Callable[[dict[str, str]], Awaitable[Principal | None]]


@dataclass(frozen=True)
class Access:
    """Who may call one method."""

    kind: str  # "open", "end_user", "admin" or "callers"
    callers: frozenset[str] = field(default_factory=frozenset)

    def describe(self) -> str:
        if self.kind == "callers":
            return "internal: " + ", ".join(sorted(self.callers))
        return {"open": "anyone", "end_user": "end users", "admin": "administrators"}[self.kind]


OPEN = Access("open")
END_USER = Access("end_user")
ADMIN = Access("admin")


def callers(*services: str) -> Access:
    """Only these shop services (by their caller tokens)."""
    return Access("callers", frozenset(services))


async def _deny(_metadata: dict[str, str]) -> Principal | None:
    raise PermissionDenied("no access rule admits this method")


class AccessPolicy:
    """The access rules of one service process and the verifiers they need."""

    def __init__(self, service: str, config: AuthConfig) -> None:
        self.service = service
        self.config = config
        self.rules: dict[str, dict[str, Access]] = {}
        self._bearer: BearerVerifier | None = None
        if config.jwks:
            self._bearer = BearerVerifier(
                BearerSettings(config.jwks, config.issuer, config.audience)
            )
        self._internal_keys: dict[str, bytes] | None = None
        self._callers: CallerVerifier | None = None

    def protect(self, service_name: str, rules: Mapping[str, Access]) -> None:
        """Declares who may call each method of ``service_name`` (a full gRPC name)."""
        self.rules[service_name] = dict(rules)

    def _needed(self, kind: str) -> list[str]:
        return [
            f"/{service}/{method}"
            for service, methods in self.rules.items()
            for method, access in methods.items()
            if access.kind == kind
        ]

    def _keys(self) -> dict[str, bytes]:
        if self._internal_keys is None:
            if not self.config.internal_keys_dir:
                raise ConfigError(
                    f"SHOP_INTERNAL_KEYS_DIR is required: {self.service} calls or is called "
                    "by other shop services, which sign their calls with keys found there"
                )
            self._internal_keys = read_internal_keys(self.config.internal_keys_dir)
        return self._internal_keys

    async def load(self) -> None:
        """Checks that every rule can be enforced and loads the keys; a gap stops the
        start-up with one line naming the variable."""
        end_user_methods = self._needed("end_user")
        if end_user_methods and self._bearer is None:
            raise ConfigError(
                f"SHOP_AUTH_JWKS is required: {end_user_methods[0]} needs end users' bearer "
                "tokens, verified with the keys it names (a JWKS URL or file, or a PEM key)"
            )
        if self._needed("admin") and self._bearer is None:
            log.warning("no SHOP_AUTH_JWKS: administrator-only methods refuse every call")
        trusted = {name for methods in self.rules.values() for a in methods.values()
                   for name in a.callers}  # fmt: skip
        if trusted:
            keys = self._keys()
            missing = sorted(trusted - keys.keys())
            if missing:
                raise ConfigError(
                    f"SHOP_INTERNAL_KEYS_DIR={self.config.internal_keys_dir!r} has no key for "
                    f"{', '.join(missing)}, whose calls {self.service} accepts"
                )
            # Its own key too, when it has one (it signs its calls with it): a token
            # signed with it is authentic, so a call from this service to itself is
            # PERMISSION_DENIED by the rules, not UNAUTHENTICATED as if forged.
            known = trusted | ({self.service} & keys.keys())
            self._callers = CallerVerifier({name: keys[name] for name in known})
        if self._bearer is not None:
            await self._bearer.load()

    def caller_tokens(self) -> CallerTokens:
        """This service's signer for its own outgoing calls."""
        key = self._keys().get(self.service)
        if key is None:
            raise ConfigError(
                f"SHOP_INTERNAL_KEYS_DIR={self.config.internal_keys_dir!r} has no key named "
                f"{self.service!r} to sign {self.service}'s calls with"
            )
        return CallerTokens(self.service, key)

    def checker(self, full_method: str) -> Check | None:
        """The check for one method, or None if anyone may call it."""
        if full_method.startswith(OPEN_PREFIXES):
            return None
        service, _, method = full_method.lstrip("/").partition("/")
        access = self.rules.get(service, {}).get(method)
        if access is None:
            return _deny
        if access.kind == "open":
            return None
        if access.kind == "callers":
            return self._caller_check(service, full_method, access.callers)
        return self._bearer_check(admin=access.kind == "admin")

    def _bearer_check(self, *, admin: bool) -> Check:
        bearer = self._bearer

        async def check(metadata: dict[str, str]) -> Principal | None:
            token = bearer_token(metadata)
            if token is None:
                raise Unauthenticated("this call needs a bearer token (authorization: Bearer …)")
            if bearer is None:
                raise PermissionDenied("no SHOP_AUTH_JWKS is configured to verify tokens")
            user = await bearer.verify(token)
            if admin and not user.is_admin:
                raise PermissionDenied(f"this call needs a token with the {ADMIN_SCOPE} scope")
            return user

        return check

    def _caller_check(self, service: str, full_method: str, allowed: frozenset[str]) -> Check:
        verifier = self._callers
        assert verifier is not None, "load() builds the verifier for every caller rule"

        async def check(metadata: dict[str, str]) -> Principal | None:
            token = metadata.get(CALLER_TOKEN_HEADER)
            if token is None:
                raise Unauthenticated(
                    f"{full_method} is internal: only shop services may call it "
                    f"({', '.join(sorted(allowed))})"
                )
            caller = verifier.verify(token, audience=service)
            if caller.service not in allowed:
                raise PermissionDenied(f"{caller.service} may not call {full_method}")
            return caller

        return check
