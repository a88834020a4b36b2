"""An xDS client in a process of its own, as a pod is: gRPC reads ``GRPC_XDS_BOOTSTRAP``
once per process, so each probe gets its own bootstrap from its environment.

``python xds_probe.py TARGET count N``: N ListProducts calls, then one JSON line
``{"pods": {pod: calls}, "failed": {code: calls}}``.
``python xds_probe.py TARGET stream``: calls until SIGTERM, one line per call,
``<time.monotonic()> <pod>`` or ``<time.monotonic()> ERROR:<code>``, then ``done``.
(CLOCK_MONOTONIC is system-wide on Linux, so the test can compare the times.)

With ``SHOP_INTERNAL_KEYS_DIR`` in its environment the probe calls as the gateway
does, with the gateway's caller token; without it, with none (a bare test server).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable

import grpc

from shop.api.services import INVENTORY as INVENTORY_SERVICE
from shop.runtime.auth.internal import CALLER_TOKEN_HEADER, CallerTokens, read_internal_keys
from shop.runtime.callscope import ROUTE_TRAILER, parse_route
from shop.v1 import inventory_pb2, inventory_pb2_grpc

CALL_TIMEOUT_S = 30
PACE_S = 0.005  # between stream calls: fine-grained timing without taking a whole core


def caller_metadata() -> Callable[[], tuple[tuple[str, str], ...]]:
    """The gateway's caller token for inventory (minted and renewed as a pod does)."""
    directory = os.environ.get("SHOP_INTERNAL_KEYS_DIR")
    if not directory:
        return lambda: ()
    tokens = CallerTokens("gateway", read_internal_keys(directory)["gateway"])
    return lambda: ((CALLER_TOKEN_HEADER, tokens.token(INVENTORY_SERVICE)),)


METADATA = caller_metadata()


async def call_once(stub: inventory_pb2_grpc.InventoryStub) -> str:
    """The inventory pod that served one call, or ERROR:<code>."""
    call = stub.ListProducts(
        inventory_pb2.ListProductsRequest(page_size=1), metadata=METADATA(), timeout=CALL_TIMEOUT_S
    )
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return f"ERROR:{error.code().name}"
    trailers = dict(await call.trailing_metadata())
    return parse_route(trailers[ROUTE_TRAILER])["inventory"]


async def count(stub: inventory_pb2_grpc.InventoryStub, calls: int) -> None:
    results = Counter([await call_once(stub) for _ in range(calls)])
    pods = {k: v for k, v in results.items() if not k.startswith("ERROR:")}
    failed = {k[6:]: v for k, v in results.items() if k.startswith("ERROR:")}
    print(json.dumps({"pods": pods, "failed": failed}), flush=True)


async def stream(stub: inventory_pb2_grpc.InventoryStub) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        outcome = await call_once(stub)
        print(f"{time.monotonic():.6f} {outcome}", flush=True)
        await asyncio.sleep(PACE_S)
    print("done", flush=True)


async def main(target: str, mode: str, calls: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        await (count(stub, calls) if mode == "count" else stream(stub))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0))
