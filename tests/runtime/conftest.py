"""Runtime tests serve made-up services ("probe", "relay", "outer"...) on the real
runtime. Those that call others sign their calls, so the session's internal keys
include their names; their setups open their methods to anyone (``open_methods``),
since what they test is the runtime, not the shop's access rules."""

from __future__ import annotations

import pytest

from shop.credentials import CALLING_SERVICES, LocalCredentials, ensure_credentials

# Test services that call another through runtime.channel().
TEST_CALLERS = ("relay", "late", "outer", "caller")


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> LocalCredentials:
    directory = tmp_path_factory.mktemp("runtime-credentials")
    return ensure_credentials(directory, (*CALLING_SERVICES, *TEST_CALLERS))
