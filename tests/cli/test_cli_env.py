"""``shop env``: the catalogue of every variable the services read, the runtime's
shared ones and each service's own, each once, each with a default that parses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shop.cli.env import every_setting
from shop.cli.main import main
from shop.gateway.settings import GatewaySettings
from shop.inventory.settings import InventorySettings
from shop.orders.settings import OrdersSettings
from shop.runtime.config import SHARED_SETTINGS, ConfigError, Setting

EVERY_SETTING = every_setting()


@pytest.mark.parametrize("setting", EVERY_SETTING, ids=lambda s: s.name)
def test_every_default_parses(setting: Setting[Any]) -> None:
    value = setting.read({})
    # Reading the default explicitly gives the same value as leaving it unset.
    assert setting.read({setting.name: setting.default}) == value


def test_setting_names_are_unique_and_documented() -> None:
    names = [s.name for s in EVERY_SETTING]
    assert len(names) == len(set(names))
    for setting in EVERY_SETTING:
        assert setting.allowed and setting.help, setting.name


def test_the_services_own_settings_come_after_the_shared_ones() -> None:
    names = [s.name for s in EVERY_SETTING]
    assert names[: len(SHARED_SETTINGS)] == [s.name for s in SHARED_SETTINGS]
    assert {"SHOP_ORDERS_TARGET", "SHOP_INVENTORY_TARGET", "SHOP_SEED_STOCK"} <= set(names)


def test_json_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == [s.name for s in EVERY_SETTING]
    assert all(set(row) == {"name", "default", "allowed", "help"} for row in rows)


def test_text_has_one_line_per_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [s.name for s in EVERY_SETTING]


def test_service_settings_read_their_variables() -> None:
    env = {
        "SHOP_ORDERS_TARGET": "dns:///orders:50051",
        "SHOP_INVENTORY_TARGET": "dns:///inventory:50051",
        "SHOP_SEED_STOCK": "7",
        "SHOP_DATA_DIR": "/srv/data",
        "SHOP_DOWNSTREAM_TIMEOUT_S": "2",
        "SHOP_STREAMS_MAX_PER_CALLER": "3",
    }
    gateway = GatewaySettings.from_env(env)
    assert (gateway.orders_target, gateway.inventory_target) == (
        "dns:///orders:50051",
        "dns:///inventory:50051",
    )
    assert gateway.streams.max_per_caller == 3
    orders = OrdersSettings.from_env(env)
    assert orders.inventory_target == "dns:///inventory:50051"
    assert orders.database.url == "sqlite:////srv/data/orders.db"
    assert orders.downstream_timeout_s == 2.0
    inventory = InventorySettings.from_env(env)
    assert inventory.seed_stock == 7
    assert inventory.database.url == "sqlite:////srv/data/inventory.db"


@pytest.mark.parametrize(
    ("name", "raw", "read"),
    [
        ("SHOP_ORDERS_TARGET", "", GatewaySettings.from_env),
        ("SHOP_INVENTORY_TARGET", " ", OrdersSettings.from_env),
        ("SHOP_SEED_STOCK", "0", InventorySettings.from_env),
        ("DATABASE_URL", "mysql://db/shop", OrdersSettings.from_env),
    ],
)
def test_a_bad_service_setting_names_its_variable(name: str, raw: str, read: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        read({name: raw})
    assert str(caught.value).startswith(f"{name}=")
