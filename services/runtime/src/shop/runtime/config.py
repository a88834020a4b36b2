"""Configuration from the environment, validated once at start-up.

Every variable is declared as a :class:`Setting`, so the full list can be printed
(``shop env``), documented, and compared with what the Helm chart sets. The ones
every service reads through the runtime (server, channels, auth, storage, streams)
are declared here, in :data:`SHARED_SETTINGS`; a variable only one service reads is
declared in that service's ``settings`` module with the same machinery, so the
runtime names no service. A bad value raises :class:`ConfigError` whose message is
the one line the process prints before exiting: it names the variable and what is
allowed.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


class StartupError(RuntimeError):
    """Configuration is fine but something the service needs never became available."""


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: its name, default, parser and help text."""

    name: str
    default: str
    parse: Callable[[str], T]
    allowed: str
    help: str

    def read(self, environ: Mapping[str, str]) -> T:
        raw = environ.get(self.name, self.default)
        try:
            return self.parse(raw.strip())
        except (ValueError, TypeError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise ConfigError(
                f"{self.name}={raw!r} is not valid: expected {self.allowed}{detail}"
            ) from None


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0 or value != value:
        raise ValueError("")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    # NaN and infinity are not a duration a timer can wait for.
    if not 0 < value < float("inf"):
        raise ValueError("")
    return value


def _percent(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 100:
        raise ValueError("")
    return value


def _status_or_off(raw: str) -> grpc.StatusCode | None:
    if raw.lower() in {"", "off", "none"}:
        return None
    code = grpc.StatusCode.__members__.get(raw.upper())
    if code is None or code is grpc.StatusCode.OK:
        raise ValueError("")
    return code


def positive_int(raw: str) -> int:
    """A parser for settings: an integer > 0."""
    value = int(raw)
    if value <= 0:
        raise ValueError("")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ValueError("")
        return value

    return parse


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("")


_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")


def _address(raw: str) -> str:
    match = _HOST_PORT.match(raw)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError("")
    return raw


def _optional_address(raw: str) -> str:
    return "" if raw.lower() in {"", "off", "none"} else _address(raw)


_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def _label(raw: str) -> str:
    if not _LABEL.match(raw):
        raise ValueError("")
    return raw


def _text(raw: str) -> str:
    return raw


def non_empty(raw: str) -> str:
    """A parser for settings: any text but none."""
    if not raw:
        raise ValueError("")
    return raw


GRPC_TARGET = "a gRPC target (host:port, dns:///name:port, ipv4:a:p,b:p, xds:///name:port)"


def target_setting(name: str, default: str, help: str) -> Setting[str]:
    """A variable naming where a service finds another one (a channel's target)."""
    return Setting(name, default, non_empty, GRPC_TARGET, help)


# --- every variable the runtime reads, for whichever service it runs -----------------

LISTEN_ADDR = Setting(
    "SHOP_LISTEN_ADDR", "0.0.0.0:50051", _address, "HOST:PORT", "gRPC listen address"
)
METRICS_ADDR = Setting(
    "SHOP_METRICS_ADDR",
    "0.0.0.0:9464",
    _optional_address,
    "HOST:PORT or 'off'",
    "Prometheus /metrics listen address",
)
POD_NAME = Setting(
    "SHOP_POD_NAME",
    "",
    _text,
    "any text",
    "name reported as the serving pod (default: the host name)",
)
LOG_LEVEL = Setting(
    "SHOP_LOG_LEVEL",
    "info",
    _choice("debug", "info", "warning", "error"),
    "one of debug, info, warning, error",
    "log level",
)
MODE = Setting(
    "SHOP_MODE",
    "local",
    _label,
    "a label: letters, digits, '-' or '_' (e.g. clusterip, headless, istio, proxyless)",
    "balancing mode this replica runs in, exported on shop_instance_info for dashboards",
)
DRAIN_DELAY_S = Setting(
    "SHOP_DRAIN_DELAY_S",
    "5",
    _non_negative_float,
    "a number of seconds >= 0",
    "time between failing readiness and stopping the server on SIGTERM",
)
SHUTDOWN_GRACE_S = Setting(
    "SHOP_SHUTDOWN_GRACE_S",
    "10",
    _non_negative_float,
    "a number of seconds >= 0",
    "time in-flight calls get to finish once the server stops",
)
MAX_CONNECTION_AGE_S = Setting(
    "SHOP_MAX_CONNECTION_AGE_S",
    "0",
    _non_negative_float,
    "a number of seconds >= 0 (0 = unlimited)",
    "server sends GOAWAY after a connection is this old, so clients re-resolve",
)
MAX_CONNECTION_AGE_GRACE_S = Setting(
    "SHOP_MAX_CONNECTION_AGE_GRACE_S",
    "5",
    _non_negative_float,
    "a number of seconds >= 0",
    "calls in flight on an aged connection get this long to finish",
)
KEEPALIVE_TIME_S = Setting(
    "SHOP_KEEPALIVE_TIME_S",
    "30",
    _non_negative_float,
    "a number of seconds >= 0 (0 = off)",
    "HTTP/2 keepalive ping interval, server and client side",
)
DATABASE_URL = Setting(
    "DATABASE_URL",
    "",
    _text,
    "a database URL (sqlite:///<file> or postgresql://)",
    "database; empty means an SQLite file in SHOP_DATA_DIR",
)
DATABASE_WAIT_S = Setting(
    "SHOP_DATABASE_WAIT_S",
    "60",
    _non_negative_float,
    "a number of seconds >= 0",
    "at start-up, how long to wait for the database to accept connections",
)
DATA_DIR = Setting(
    "SHOP_DATA_DIR", "./data", non_empty, "a directory path", "where SQLite files live"
)
LB_POLICY = Setting(
    "SHOP_LB_POLICY",
    "round_robin",
    _choice("pick_first", "round_robin", "weighted_round_robin"),
    "pick_first, round_robin or weighted_round_robin",
    "client load-balancing policy (ignored for xds:/// targets, which get it from xDS); "
    "weighted_round_robin weighs each backend by the ORCA load reports its answers carry",
)
WRR_BLACKOUT_S = Setting(
    "SHOP_WRR_BLACKOUT_S",
    "0",
    _non_negative_float,
    "a number of seconds >= 0",
    "weighted_round_robin: a backend's weight counts only once its connection has reported "
    "this long (gRPC's blackoutPeriod, 10 s by default there; see WeightedRoundRobin)",
)
WRR_ERROR_PENALTY = Setting(
    "SHOP_WRR_ERROR_PENALTY",
    "1.0",
    _non_negative_float,
    "a number >= 0",
    "weighted_round_robin: how much a backend's reported errors/s count against its weight "
    "(gRPC's errorUtilizationPenalty)",
)
OUTLIER_DETECTION = Setting(
    "SHOP_OUTLIER_DETECTION",
    "false",
    _boolean,
    "true or false",
    "wrap the client policy in gRPC outlier detection (failure-percentage ejection)",
)
OUTLIER_INTERVAL_S = Setting(
    "SHOP_OUTLIER_INTERVAL_S",
    "10",
    _positive_float,
    "a number of seconds > 0",
    "outlier detection: how often backends are judged",
)
OUTLIER_BASE_EJECTION_S = Setting(
    "SHOP_OUTLIER_BASE_EJECTION_S",
    "30",
    _positive_float,
    "a number of seconds > 0",
    "outlier detection: an ejection lasts this long times the backend's ejections so far",
)
OUTLIER_MAX_EJECTION_PERCENT = Setting(
    "SHOP_OUTLIER_MAX_EJECTION_PERCENT",
    "10",
    _percent,
    "an integer from 0 to 100",
    "outlier detection: no more backends are ejected once this share is",
)
OUTLIER_FAILURE_PERCENT = Setting(
    "SHOP_OUTLIER_FAILURE_PERCENT",
    "85",
    _percent,
    "an integer from 0 to 100",
    "outlier detection: a backend whose share of failed calls in an interval is above this "
    "percentage is ejected",
)
OUTLIER_MIN_HOSTS = Setting(
    "SHOP_OUTLIER_MIN_HOSTS",
    "5",
    positive_int,
    "an integer > 0",
    "outlier detection: nothing is ejected with fewer backends than this "
    "(gRPC's default, 5, ejects nothing in a Service of 2-4 pods)",
)
OUTLIER_REQUEST_VOLUME = Setting(
    "SHOP_OUTLIER_REQUEST_VOLUME",
    "50",
    positive_int,
    "an integer > 0",
    "outlier detection: a backend is judged only with this many calls in an interval",
)
ORCA_REPORTS = Setting(
    "SHOP_ORCA_REPORTS",
    "true",
    _boolean,
    "true or false",
    "attach an ORCA load report (CPU utilization against the pod's limit, calls/s, "
    "errors/s) to every answer, for weighted_round_robin callers",
)
FAULT_STATUS = Setting(
    "SHOP_FAULT_STATUS",
    "off",
    _status_or_off,
    "off or a gRPC status name other than OK (e.g. UNAVAILABLE)",
    "fault injection: every call but health checks and reflection ends at once with this "
    "status, while health stays SERVING (the lab's failing pod)",
)
CLIENT_HEALTH_CHECK = Setting(
    "SHOP_CLIENT_HEALTH_CHECK",
    "true",
    _boolean,
    "true or false",
    "round_robin skips backends whose health service says NOT_SERVING",
)
DNS_MIN_RERESOLUTION_S = Setting(
    "SHOP_DNS_MIN_RERESOLUTION_S",
    "30",
    _non_negative_float,
    "a number of seconds >= 0",
    "lower bound between two DNS resolutions of a client channel",
)
DOWNSTREAM_TIMEOUT_S = Setting(
    "SHOP_DOWNSTREAM_TIMEOUT_S",
    "5",
    _non_negative_float,
    "a number of seconds >= 0",
    "deadline for a downstream call when the incoming call has none",
)
RETRY_MAX_ATTEMPTS = Setting(
    "SHOP_RETRY_MAX_ATTEMPTS",
    "4",
    positive_int,
    "an integer from 1 to 5",
    "attempts per downstream call on UNAVAILABLE or CANCELLED (calls are idempotent by design)",
)
UVLOOP = Setting("SHOP_UVLOOP", "true", _boolean, "true or false", "run on uvloop")

AUTH_JWKS = Setting(
    "SHOP_AUTH_JWKS",
    "",
    _text,
    "a JWKS URL (https://...), or the path of a JWKS file or of a PEM public key/certificate",
    "keys that verify end users' and administrators' bearer tokens (required by the gateway)",
)
AUTH_ISSUER = Setting(
    "SHOP_AUTH_ISSUER",
    "grpc-shop",
    non_empty,
    "the identity provider's issuer (the tokens' iss claim)",
    "bearer tokens must come from this issuer",
)
AUTH_AUDIENCE = Setting(
    "SHOP_AUTH_AUDIENCE",
    "grpc-shop",
    non_empty,
    "the audience the identity provider puts in the shop's tokens (aud claim)",
    "bearer tokens must be meant for this audience",
)
INTERNAL_KEYS_DIR = Setting(
    "SHOP_INTERNAL_KEYS_DIR",
    "",
    _text,
    "a directory with one key file per shop service, named after it",
    "keys that sign and verify calls between shop services (own key + trusted callers')",
)

# Long-lived server streams (WatchOrder), see shop.runtime.streams. Measured on the
# gateway: about 50 KiB of RSS per open stream over a ~85 MiB base, so 1000 streams
# stay well inside the chart's 256 Mi limit with room for unary traffic.
STREAMS_MAX_PER_REPLICA = Setting(
    "SHOP_STREAMS_MAX_PER_REPLICA",
    "1000",
    positive_int,
    "an integer > 0",
    "concurrent WatchOrder streams one gateway or orders replica serves; "
    "more are refused with RESOURCE_EXHAUSTED",
)
STREAMS_MAX_PER_CALLER = Setting(
    "SHOP_STREAMS_MAX_PER_CALLER",
    "10",
    positive_int,
    "an integer > 0",
    "gateway: concurrent WatchOrder streams one end user (token subject) may hold on a "
    "replica; more are refused with RESOURCE_EXHAUSTED",
)
STREAM_MAX_LIFETIME_S = Setting(
    "SHOP_STREAM_MAX_LIFETIME_S",
    "300",
    _positive_float,
    "a number of seconds > 0",
    "a WatchOrder stream ends with OK after at most this long (minus up to 10% jitter); "
    "the client re-subscribes and gets the current state first",
)

SHARED_SETTINGS: tuple[Setting[Any], ...] = (
    LISTEN_ADDR,
    METRICS_ADDR,
    POD_NAME,
    MODE,
    LOG_LEVEL,
    DRAIN_DELAY_S,
    SHUTDOWN_GRACE_S,
    MAX_CONNECTION_AGE_S,
    MAX_CONNECTION_AGE_GRACE_S,
    KEEPALIVE_TIME_S,
    DATABASE_URL,
    DATABASE_WAIT_S,
    DATA_DIR,
    LB_POLICY,
    WRR_BLACKOUT_S,
    WRR_ERROR_PENALTY,
    OUTLIER_DETECTION,
    OUTLIER_INTERVAL_S,
    OUTLIER_BASE_EJECTION_S,
    OUTLIER_MAX_EJECTION_PERCENT,
    OUTLIER_FAILURE_PERCENT,
    OUTLIER_MIN_HOSTS,
    OUTLIER_REQUEST_VOLUME,
    ORCA_REPORTS,
    FAULT_STATUS,
    CLIENT_HEALTH_CHECK,
    DNS_MIN_RERESOLUTION_S,
    DOWNSTREAM_TIMEOUT_S,
    RETRY_MAX_ATTEMPTS,
    UVLOOP,
    AUTH_JWKS,
    AUTH_ISSUER,
    AUTH_AUDIENCE,
    INTERNAL_KEYS_DIR,
    STREAMS_MAX_PER_REPLICA,
    STREAMS_MAX_PER_CALLER,
    STREAM_MAX_LIFETIME_S,
)


@dataclass(frozen=True)
class ServerConfig:
    """What every server needs: addresses, identity, shutdown and connection timing."""

    listen_addr: str
    metrics_addr: str
    pod_name: str
    log_level: str
    drain_delay_s: float
    shutdown_grace_s: float
    max_connection_age_s: float
    max_connection_age_grace_s: float
    keepalive_time_s: float
    use_uvloop: bool
    mode: str = MODE.default
    orca_reports: bool = True
    # A status every call ends with at once (fault injection), None: off.
    fault_status: grpc.StatusCode | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if environ is None else environ
        return cls(
            listen_addr=LISTEN_ADDR.read(env),
            metrics_addr=METRICS_ADDR.read(env),
            pod_name=POD_NAME.read(env) or socket.gethostname(),
            log_level=LOG_LEVEL.read(env),
            drain_delay_s=DRAIN_DELAY_S.read(env),
            shutdown_grace_s=SHUTDOWN_GRACE_S.read(env),
            max_connection_age_s=MAX_CONNECTION_AGE_S.read(env),
            max_connection_age_grace_s=MAX_CONNECTION_AGE_GRACE_S.read(env),
            keepalive_time_s=KEEPALIVE_TIME_S.read(env),
            use_uvloop=UVLOOP.read(env),
            mode=MODE.read(env),
            orca_reports=ORCA_REPORTS.read(env),
            fault_status=FAULT_STATUS.read(env),
        )


@dataclass(frozen=True)
class WeightedRoundRobin:
    """gRPC's ``weighted_round_robin`` settings (gRFC A58) the shop exposes; the
    others keep gRPC's defaults (weights updated every second, forgotten after
    three minutes without a report).

    The blackout defaults to 0, not gRPC's 10 s: gRPC starts it again whenever a
    connection to the backend is re-established, and a server max connection age
    (the chart's headless mode) re-establishes every connection that often, so a
    backend's weight would go unused much of the time. The lab's slow-pod scenario
    measured it: a pod at a quarter of its peers' CPU limit kept 31% of the calls with a
    1 s blackout under a 2 s age, 7% with none. A blackout guards against judging a
    backend by its first few calls; the shop's reports are the server's own last second
    of work (``shop.runtime.orca``), whole from the first answer on a new connection."""

    blackout_s: float = 0.0
    error_penalty: float = 1.0


@dataclass(frozen=True)
class OutlierDetection:
    """gRPC's outlier detection (gRFC A50) with failure-percentage ejection only:
    every ``interval_s``, a backend that got at least ``request_volume`` calls and
    failed more than ``failure_percent`` of them is ejected for ``base_ejection_s``
    times its ejections so far, while fewer than ``max_ejection_percent`` of the
    backends are ejected and there are at least ``min_hosts``. (Success-rate ejection,
    the other algorithm, needs a spread of several hosts to judge by.)"""

    interval_s: float
    base_ejection_s: float
    max_ejection_percent: int
    failure_percent: int
    min_hosts: int
    request_volume: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OutlierDetection:
        return cls(
            interval_s=OUTLIER_INTERVAL_S.read(env),
            base_ejection_s=OUTLIER_BASE_EJECTION_S.read(env),
            max_ejection_percent=OUTLIER_MAX_EJECTION_PERCENT.read(env),
            failure_percent=OUTLIER_FAILURE_PERCENT.read(env),
            min_hosts=OUTLIER_MIN_HOSTS.read(env),
            request_volume=OUTLIER_REQUEST_VOLUME.read(env),
        )


@dataclass(frozen=True)
class ChannelConfig:
    """How this service's client channels reach the next hop."""

    lb_policy: str
    client_health_check: bool
    dns_min_reresolution_s: float
    downstream_timeout_s: float
    retry_max_attempts: int
    keepalive_time_s: float
    wrr: WeightedRoundRobin = WeightedRoundRobin()
    # None: no outlier detection.
    outlier_detection: OutlierDetection | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ChannelConfig:
        env = os.environ if environ is None else environ
        attempts = RETRY_MAX_ATTEMPTS.read(env)
        if attempts > 5:
            # gRPC silently caps maxAttempts at 5; say so rather than pretend.
            raise ConfigError(
                f"{RETRY_MAX_ATTEMPTS.name}={attempts} is not valid: expected "
                f"{RETRY_MAX_ATTEMPTS.allowed}"
            )
        return cls(
            lb_policy=LB_POLICY.read(env),
            client_health_check=CLIENT_HEALTH_CHECK.read(env),
            dns_min_reresolution_s=DNS_MIN_RERESOLUTION_S.read(env),
            downstream_timeout_s=DOWNSTREAM_TIMEOUT_S.read(env),
            retry_max_attempts=attempts,
            keepalive_time_s=KEEPALIVE_TIME_S.read(env),
            wrr=WeightedRoundRobin(
                blackout_s=WRR_BLACKOUT_S.read(env), error_penalty=WRR_ERROR_PENALTY.read(env)
            ),
            outlier_detection=OutlierDetection.from_env(env)
            if OUTLIER_DETECTION.read(env)
            else None,
        )


@dataclass(frozen=True)
class AuthConfig:
    """Where the keys that authenticate callers come from (see ``shop.runtime.auth``)."""

    jwks: str
    issuer: str
    audience: str
    internal_keys_dir: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthConfig:
        env = os.environ if environ is None else environ
        return cls(
            jwks=AUTH_JWKS.read(env),
            issuer=AUTH_ISSUER.read(env),
            audience=AUTH_AUDIENCE.read(env),
            internal_keys_dir=INTERNAL_KEYS_DIR.read(env),
        )


_PASSWORD_PARAMETER = re.compile(r"(?i)([?&;]password=)[^&;]*")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (the user info's, and a
    ``password=`` query parameter's), for messages that end up in logs and on screens.

    Everything up to the last ``@`` counts as user info, so a password containing
    ``@``, ``/`` or ``:`` is masked whole; a mistyped scheme (``postgres://``,
    ``postgresql+psycopg://``, none at all) changes nothing.
    """
    scheme, separator, rest = url.partition("://") if "://" in url else ("", "", url)
    userinfo, at, location = rest.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        rest = f"{user}:***@{location}"
    return _PASSWORD_PARAMETER.sub(r"\1***", f"{scheme}{separator}{rest}")


def database_url(name: str, environ: Mapping[str, str] | None = None) -> str:
    """``DATABASE_URL`` if set, else the SQLite file ``<name>.db`` in ``SHOP_DATA_DIR``
    (each service passes its own name, so services on one host keep apart)."""
    env = os.environ if environ is None else environ
    url = DATABASE_URL.read(env)
    if url:
        scheme, separator, rest = url.partition("://")
        # The driver-named forms (sqlite+aiosqlite, postgresql+asyncpg) are what earlier
        # releases documented; they name the same databases.
        plain = _DATABASE_SCHEMES.get(scheme)
        if not separator or plain is None:
            raise ConfigError(
                f"{DATABASE_URL.name}={mask_url(url)!r} is not valid: "
                f"expected {DATABASE_URL.allowed}"
            )
        return f"{plain}://{rest}"
    data_dir = os.path.abspath(DATA_DIR.read(env))
    return f"sqlite:///{data_dir}/{name}.db"


_DATABASE_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgresql",
    "postgresql+asyncpg": "postgresql",
}


@dataclass(frozen=True)
class DatabaseSettings:
    """Which database a service opens, and how long it waits for it at start-up."""

    url: str
    wait_s: float

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> DatabaseSettings:
        """``name``: the service's SQLite file name when ``DATABASE_URL`` is unset."""
        env = os.environ if environ is None else environ
        return cls(url=database_url(name, env), wait_s=DATABASE_WAIT_S.read(env))
