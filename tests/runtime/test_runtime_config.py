"""Configuration from the environment: defaults parse, bad values name their variable.

The runtime's shared settings here; ``tests/cli/test_cli_env.py`` checks the whole
catalogue ``shop env`` prints, the services' own settings included."""

from __future__ import annotations

from typing import Any

import pytest

from shop.api import targets
from shop.inventory import settings as inventory_settings
from shop.runtime import config
from shop.runtime.config import (
    SHARED_SETTINGS,
    ChannelConfig,
    ConfigError,
    DatabaseSettings,
    ServerConfig,
    Setting,
    database_url,
)


@pytest.mark.parametrize("setting", SHARED_SETTINGS, ids=lambda s: s.name)
def test_every_default_parses(setting: Setting[Any]) -> None:
    value = setting.read({})
    # Reading the default explicitly gives the same value as leaving it unset.
    assert setting.read({setting.name: setting.default}) == value


def test_setting_names_are_unique_and_documented() -> None:
    names = [s.name for s in SHARED_SETTINGS]
    assert len(names) == len(set(names))
    for setting in SHARED_SETTINGS:
        assert setting.allowed and setting.help, setting.name


def test_defaults_build_both_configs() -> None:
    server = ServerConfig.from_env({"SHOP_POD_NAME": "pod-a"})
    assert server.listen_addr == "0.0.0.0:50051"
    assert server.pod_name == "pod-a"
    assert server.drain_delay_s == 5.0
    assert server.shutdown_grace_s == 10.0
    channel = ChannelConfig.from_env({})
    assert channel.lb_policy == "round_robin"
    assert channel.client_health_check is True
    assert channel.retry_max_attempts == 4


def test_pod_name_falls_back_to_host_name() -> None:
    assert ServerConfig.from_env({}).pod_name


BAD_VALUES = [
    ("SHOP_DRAIN_DELAY_S", "abc", "a number of seconds >= 0"),
    ("SHOP_DRAIN_DELAY_S", "-1", "a number of seconds >= 0"),
    ("SHOP_DRAIN_DELAY_S", "nan", "a number of seconds >= 0"),
    ("SHOP_SHUTDOWN_GRACE_S", "", "a number of seconds >= 0"),
    ("SHOP_MAX_CONNECTION_AGE_S", "1h", "a number of seconds >= 0"),
    ("SHOP_KEEPALIVE_TIME_S", "-0.5", "a number of seconds >= 0"),
    ("SHOP_LISTEN_ADDR", "nope", "HOST:PORT"),
    ("SHOP_LISTEN_ADDR", "127.0.0.1:0", "HOST:PORT"),
    ("SHOP_LISTEN_ADDR", "127.0.0.1:65536", "HOST:PORT"),
    ("SHOP_LISTEN_ADDR", "http://127.0.0.1:50051", "HOST:PORT"),
    ("SHOP_METRICS_ADDR", "9464", "HOST:PORT or 'off'"),
    ("SHOP_LOG_LEVEL", "verbose", "one of debug, info, warning, error"),
    ("SHOP_LB_POLICY", "random", "pick_first, round_robin or weighted_round_robin"),
    ("SHOP_CLIENT_HEALTH_CHECK", "maybe", "true or false"),
    ("SHOP_UVLOOP", "2", "true or false"),
    ("SHOP_RETRY_MAX_ATTEMPTS", "0", "an integer from 1 to 5"),
    ("SHOP_RETRY_MAX_ATTEMPTS", "6", "an integer from 1 to 5"),
    ("SHOP_RETRY_MAX_ATTEMPTS", "2.5", "an integer from 1 to 5"),
    ("SHOP_DOWNSTREAM_TIMEOUT_S", "soon", "a number of seconds >= 0"),
    ("SHOP_DNS_MIN_RERESOLUTION_S", "-3", "a number of seconds >= 0"),
    ("SHOP_ORDERS_TARGET", "", "a gRPC target"),
    ("SHOP_INVENTORY_TARGET", "  ", "a gRPC target"),
]


@pytest.mark.parametrize(("name", "raw", "allowed"), BAD_VALUES)
def test_bad_value_names_variable_and_what_is_allowed(name: str, raw: str, allowed: str) -> None:
    env = {name: raw}
    with pytest.raises(ConfigError) as caught:
        ServerConfig.from_env(env)
        ChannelConfig.from_env(env)
        targets.ORDERS_TARGET.read(env)
        targets.INVENTORY_TARGET.read(env)
    message = str(caught.value)
    assert message.startswith(f"{name}=")
    assert allowed in message
    assert "\n" not in message


def test_bad_seed_stock_and_data_dir() -> None:
    with pytest.raises(ConfigError, match=r"^SHOP_SEED_STOCK="):
        inventory_settings.SEED_STOCK.read({"SHOP_SEED_STOCK": "-5"})
    with pytest.raises(ConfigError, match=r"^SHOP_DATA_DIR="):
        database_url("orders", {"SHOP_DATA_DIR": ""})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("[::1]:50051", "[::1]:50051"),
        ("orders.shop.svc.cluster.local:50051", "orders.shop.svc.cluster.local:50051"),
        ("  0.0.0.0:1  ", "0.0.0.0:1"),
    ],
)
def test_addresses_accepted(raw: str, expected: str) -> None:
    assert config.LISTEN_ADDR.read({"SHOP_LISTEN_ADDR": raw}) == expected


@pytest.mark.parametrize("raw", ["off", "OFF", "none", ""])
def test_metrics_can_be_turned_off(raw: str) -> None:
    assert config.METRICS_ADDR.read({"SHOP_METRICS_ADDR": raw}) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("Off", False)],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert config.CLIENT_HEALTH_CHECK.read({"SHOP_CLIENT_HEALTH_CHECK": raw}) is expected


def test_choices_are_case_insensitive() -> None:
    assert config.LB_POLICY.read({"SHOP_LB_POLICY": "Pick_First"}) == "pick_first"
    assert config.LOG_LEVEL.read({"SHOP_LOG_LEVEL": "DEBUG"}) == "debug"


def test_database_url() -> None:
    assert database_url("orders", {"SHOP_DATA_DIR": "/srv/data"}) == (
        "sqlite:////srv/data/orders.db"
    )
    assert database_url("orders", {"DATABASE_URL": "postgresql://u@h/db"}) == (
        "postgresql://u@h/db"
    )
    # The forms earlier releases documented still name the same databases.
    assert database_url("orders", {"DATABASE_URL": "postgresql+asyncpg://u@h/db"}) == (
        "postgresql://u@h/db"
    )
    assert database_url("orders", {"DATABASE_URL": "sqlite+aiosqlite:////d/o.db"}) == (
        "sqlite:////d/o.db"
    )
    with pytest.raises(ConfigError, match=r"^DATABASE_URL="):
        database_url("orders", {"DATABASE_URL": "postgres://u@h/db"})
    with pytest.raises(ConfigError, match=r"^DATABASE_URL="):
        database_url("orders", {"DATABASE_URL": "mysql://u@h/db"})


def test_database_settings() -> None:
    env = {"SHOP_DATA_DIR": "/srv/data", "SHOP_DATABASE_WAIT_S": "2.5"}
    assert DatabaseSettings.from_env("inventory", env) == DatabaseSettings(
        url="sqlite:////srv/data/inventory.db", wait_s=2.5
    )
    with pytest.raises(ConfigError, match=r"^SHOP_DATABASE_WAIT_S="):
        DatabaseSettings.from_env("inventory", {"SHOP_DATABASE_WAIT_S": "-1"})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://shop:s3cr3t@db:5432/shop", "postgres://shop:***@db:5432/shop"),
        ("postgresql+psycopg://shop:p@s:s/w0rd@db/shop", "postgresql+psycopg://shop:***@db/shop"),
        ("shop:s3cr3t@db/shop", "shop:***@db/shop"),
        ("mysql://db/shop?user=shop&password=s3cr3t", "mysql://db/shop?user=shop&password=***"),
    ],
)
def test_a_wrong_database_url_is_reported_without_its_password(url: str, shown: str) -> None:
    with pytest.raises(ConfigError) as caught:
        database_url("orders", {"DATABASE_URL": url})
    assert str(caught.value).startswith(f"DATABASE_URL={shown!r} is not valid: expected ")
    assert "s3cr3t" not in str(caught.value) and "w0rd" not in str(caught.value)
