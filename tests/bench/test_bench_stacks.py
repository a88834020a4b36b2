"""Sorting py-spy's collapsed stacks into categories: what each frame is, and which
frame of a stack decides (storage and telemetry own what they call; otherwise the
innermost recognised frame wins). Fed with lines written here, in py-spy's format."""

from __future__ import annotations

import pytest

from shop.bench.stacks import (
    Category,
    classify,
    count_by_thread,
    count_categories,
    frame_category,
    native_thread_category,
    parse_collapsed,
    python_thread_names,
    thread_id,
)

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
SRC = "/repo/services"

# Frames as py-spy writes them with --full-filenames: "function (file:line)".
MAIN = f"<module> ({SRC}/orders/src/shop/orders/__main__.py:12)"
RUNNER = f"Runner.run ({STDLIB}/asyncio/runners.py:118)"
HANDLE = f"ServerInterceptor._wrap_unary.<locals>.handle ({SRC}/runtime/src/shop/runtime/interceptors.py:230)"  # noqa: E501
SERVICER = f"OrdersServicer.CreateOrder ({SRC}/orders/src/shop/orders/servicer.py:80)"
PLACEMENT = f"OrderPlacement.place ({SRC}/orders/src/shop/orders/placement.py:154)"
STORE = f"OrderStore.transition ({SRC}/orders/src/shop/orders/store.py:240)"
DATABASE = f"Database.transaction ({SRC}/runtime/src/shop/runtime/database.py:90)"
SQLALCHEMY = f"AsyncConnection.execute ({SITE}/sqlalchemy/ext/asyncio/engine.py:667)"
AIOSQLITE = f"_connection_worker_thread ({SITE}/aiosqlite/core.py:62)"
SQLITE3 = f"<module> ({STDLIB}/sqlite3/dbapi2.py:20)"
FUTURES = f"Future.result ({STDLIB}/asyncio/futures.py:203)"
GRPC_CALL = f"UnaryUnaryCall._invoke ({SITE}/grpc/aio/_call.py:595)"
GRPC_INTERCEPTOR = f"InterceptedUnaryUnaryCall._invoke ({SITE}/grpc/aio/_interceptor.py:707)"
CLIENT_INTERCEPTOR = f"_ClientBase._begin ({SRC}/runtime/src/shop/runtime/interceptors.py:341)"
DESERIALIZE = f"deserialize ({SITE}/grpc/_common.py:100)"
GRPC_COMMON_OTHER = f"_cygrpc_aio_closure ({SITE}/grpc/_common.py:150)"
DECODING = f"tolerant.<locals>.deserialize ({SRC}/runtime/src/shop/runtime/decoding.py:51)"
PROTOBUF = f"MessageToJson ({SITE}/google/protobuf/json_format.py:120)"
PB2 = f"<module> ({SRC}/api/src/shop/v1/orders_pb2.py:30)"
PB2_GRPC = f"OrdersStub.__init__ ({SRC}/api/src/shop/v1/orders_pb2_grpc.py:19)"
HEALTH = f"HealthServicer.Check ({SITE}/grpc_health/v1/health.py:120)"
OTEL_EXPORT = f"OTLPSpanExporter.export ({SITE}/opentelemetry/exporter/otlp/proto/grpc/trace_exporter/__init__.py:150)"  # noqa: E501
GRPC_SYNC = f"_UnaryUnaryMultiCallable.__call__ ({SITE}/grpc/_channel.py:1178)"
PROMETHEUS = f"Counter.inc ({SITE}/prometheus_client/metrics.py:310)"
METRICS = f"RpcMetrics.handled ({SRC}/runtime/src/shop/runtime/metrics.py:60)"
SAMPLING = f"FastSampling.incoming ({SRC}/runtime/src/shop/runtime/sampling.py:108)"
LOGS = f"JsonFormatter.format ({SRC}/runtime/src/shop/runtime/logs.py:40)"
LOGGING = f"Logger.info ({STDLIB}/logging/__init__.py:1489)"
JWT = f"PyJWT.decode ({SITE}/jwt/api_jwt.py:370)"
BEARER = f"BearerVerifier.verify ({SRC}/runtime/src/shop/runtime/auth/bearer.py:68)"
BOOTSTRAP = (
    f"Thread._bootstrap ({STDLIB}/threading.py:1002)",
    f"Thread._bootstrap_inner ({STDLIB}/threading.py:1045)",
    f"Thread.run ({STDLIB}/threading.py:982)",
)
SELECT = f"_PollLikeSelector.select ({STDLIB}/selectors.py:415)"


@pytest.mark.parametrize(
    ("frame", "category"),
    [
        (GRPC_CALL, Category.GRPC),
        (GRPC_INTERCEPTOR, Category.GRPC),
        (HEALTH, Category.GRPC),
        (PB2_GRPC, Category.GRPC),
        # Native frames (py-spy --native): grpc._cython's library.
        (f"0x7f62 ({SITE}/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so)", Category.GRPC),
        (DESERIALIZE, Category.PROTOBUF),  # where the C (de)serialisation is called
        (GRPC_COMMON_OTHER, Category.GRPC),  # the rest of grpc/_common.py stays gRPC
        (DECODING, Category.PROTOBUF),
        (PROTOBUF, Category.PROTOBUF),
        (PB2, Category.PROTOBUF),
        (f"validate_items ({SRC}/api/src/shop/api/orderlines.py:30)", Category.PROTOBUF),
        (f"is_identifier ({SRC}/runtime/src/shop/runtime/validation.py:31)", Category.PROTOBUF),
        (SQLALCHEMY, Category.STORAGE),
        (AIOSQLITE, Category.STORAGE),
        (SQLITE3, Category.STORAGE),
        (f"connect ({SITE}/asyncpg/connection.py:2300)", Category.STORAGE),
        (STORE, Category.STORAGE),
        (f"InventoryStore.reserve ({SRC}/inventory/src/shop/inventory/store.py:133)",
         Category.STORAGE),
        (DATABASE, Category.STORAGE),
        (OTEL_EXPORT, Category.TELEMETRY),  # its path holds "proto/grpc/"
        (f"wrapper ({SITE}/opentelemetry/instrumentation/asyncio/__init__.py:1)",
         Category.TELEMETRY),
        (PROMETHEUS, Category.TELEMETRY),
        (METRICS, Category.TELEMETRY),
        (SAMPLING, Category.TELEMETRY),
        (f"Tracing.__init__ ({SRC}/runtime/src/shop/runtime/tracing.py:51)", Category.TELEMETRY),
        (LOGS, Category.TELEMETRY),
        (LOGGING, Category.TELEMETRY),
        (RUNNER, Category.EVENT_LOOP),
        (FUTURES, Category.EVENT_LOOP),
        (f"install ({SITE}/uvloop/__init__.py:20)", Category.EVENT_LOOP),
        (SERVICER, Category.REST),
        (HANDLE, Category.REST),
        (BEARER, Category.REST),
        (MAIN, Category.REST),
        # py-spy's shortened file names (without --full-filenames) match the same way.
        ("UnaryUnaryCall._invoke (grpc/aio/_call.py:595)", Category.GRPC),
        ("OrderStore.transition (shop/orders/store.py:240)", Category.STORAGE),
        ("OrdersServicer.CreateOrder (shop/orders/servicer.py:80)", Category.REST),
        # Whoever called these decides: the standard library, unnamed third parties.
        (JWT, None),
        (BOOTSTRAP[2], None),
        (SELECT, None),
        ("<module> (<frozen runpy>:88)", None),
        # A folder that happens to be called shop is not the shop's package.
        ("Thread.run (/srv/shop/python/lib/threading.py:982)", None),
        ("[unknown frame]", None),
    ],
)  # fmt: skip
def test_each_frame_is_recognised_by_its_file(frame: str, category: Category | None) -> None:
    assert frame_category(frame) is category


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("Thread-1 (_poll_wrapper)", Category.GRPC),
        ("Thread-3 (serve_forever)", Category.TELEMETRY),
        ("OtelBatchSpanRecordProcessor", Category.TELEMETRY),
        ("Thread-2 (_connection_worker_thread)", Category.STORAGE),
        ("MainThread", None),
        ("ThreadPoolExecutor-0_0", None),
    ],
)
def test_a_thread_pseudo_frame_is_recognised_by_the_threads_name(
    name: str, category: Category | None
) -> None:
    assert frame_category(f"thread (4242): {name}") is category
    assert frame_category("thread (4242)") is None  # py-spy gave no name


def test_grpc_cores_native_threads_are_recognised_by_their_os_name() -> None:
    for comm in ("event_engine", "grpc_global_tim", "lifeguard", "default-executo"):
        assert native_thread_category(comm) is Category.GRPC, comm
    assert native_thread_category("python") is None


@pytest.mark.parametrize(
    ("stack", "category"),
    [
        # Innermost recognised frame wins: a library's own time is its own...
        ((MAIN, RUNNER, HANDLE, SERVICER, GRPC_CALL), Category.GRPC),
        ((MAIN, RUNNER, HANDLE, SERVICER, GRPC_CALL, DESERIALIZE), Category.PROTOBUF),
        # ...and application code that gRPC or the loop runs is application code.
        ((MAIN, RUNNER, HANDLE, SERVICER), Category.REST),
        ((MAIN, RUNNER, GRPC_INTERCEPTOR, CLIENT_INTERCEPTOR), Category.REST),
        ((MAIN, RUNNER, HANDLE, BEARER, JWT), Category.REST),  # jwt: whoever called it
        # The loop thread with nothing of Python below the loop: the event loop.
        ((MAIN, RUNNER), Category.EVENT_LOOP),
        ((MAIN, RUNNER, SERVICER, FUTURES), Category.EVENT_LOOP),
        # Storage owns what it calls, even gRPC-, protobuf- or loop-looking frames...
        ((MAIN, RUNNER, SERVICER, PLACEMENT, STORE, SQLALCHEMY, FUTURES), Category.STORAGE),
        ((MAIN, RUNNER, SERVICER, STORE, PB2), Category.STORAGE),
        ((MAIN, RUNNER, SERVICER, DATABASE, SQLITE3), Category.STORAGE),
        # ...and so does telemetry (the exporter's gRPC call and its encoding).
        ((*BOOTSTRAP, OTEL_EXPORT, GRPC_SYNC, PROTOBUF), Category.TELEMETRY),
        ((MAIN, RUNNER, HANDLE, METRICS, PROMETHEUS), Category.TELEMETRY),
        # The outermost of the two owners decides.
        ((MAIN, RUNNER, SERVICER, STORE, LOGGING, LOGS), Category.STORAGE),
        ((MAIN, RUNNER, HANDLE, LOGS, DATABASE), Category.TELEMETRY),
        # No frame recognised at all: rest.
        ((*BOOTSTRAP, SELECT), Category.REST),
        # Threads: the name decides when no frame does, and is the outermost frame.
        (("thread (7): Thread-1 (_poll_wrapper)", *BOOTSTRAP), Category.GRPC),
        (("thread (8): Thread-2 (serve_forever)", *BOOTSTRAP, SELECT), Category.TELEMETRY),
        (("thread (9): MainThread", MAIN, RUNNER), Category.EVENT_LOOP),
        (("thread (9): MainThread", MAIN, RUNNER, SERVICER, GRPC_CALL), Category.GRPC),
        (("thread (9): Thread-4 (_connection_worker_thread)", *BOOTSTRAP, AIOSQLITE),
         Category.STORAGE),
        # Nothing to judge by: empty, in no category.
        (("thread (9): MainThread",), None),
        ((), None),
        # ...unless the thread's name says it all.
        (("thread (7): Thread-1 (_poll_wrapper)",), Category.GRPC),
    ],
)  # fmt: skip
def test_which_frame_decides(stack: tuple[str, ...], category: Category | None) -> None:
    assert classify(stack) is category


def test_collapsed_lines_are_parsed_and_counted_per_category_and_thread() -> None:
    lines = [
        f"thread (100): MainThread;{MAIN};{RUNNER} 5\n",
        f"thread (100): MainThread;{MAIN};{RUNNER};{SERVICER};{STORE};{SQLALCHEMY} 3\n",
        f"thread (100): MainThread;{MAIN};{RUNNER} 1\n",  # the same stack again: adds up
        "thread (100): MainThread 2\n",  # no frame: empty
        "\n",
        f"thread (0x1f4): Thread-1 (_poll_wrapper);{';'.join(BOOTSTRAP)} 4\n",
    ]
    stacks = parse_collapsed(lines)
    assert stacks[("thread (100): MainThread", MAIN, RUNNER)] == 6
    assert sum(stacks.values()) == 15
    counts = count_categories(stacks)
    assert counts.samples[Category.EVENT_LOOP] == 6
    assert counts.samples[Category.STORAGE] == 3
    assert counts.samples[Category.GRPC] == 4
    assert (counts.empty, counts.attributed, counts.total) == (2, 13, 15)
    shares = counts.shares()
    assert shares is not None and sum(shares.values()) == pytest.approx(1.0)
    assert shares[Category.GRPC] == pytest.approx(4 / 13)  # empty stacks take no share
    by_thread = count_by_thread(stacks)
    assert set(by_thread) == {100, 0x1F4}
    assert by_thread[0x1F4].samples[Category.GRPC] == 4
    assert by_thread[100].empty == 2
    assert python_thread_names(stacks) == {100: "MainThread", 500: "Thread-1 (_poll_wrapper)"}
    assert thread_id((MAIN, RUNNER)) is None
    assert count_categories({}).shares() is None


def test_a_line_without_a_count_is_refused() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_collapsed([f"{MAIN} 1\n", f"{MAIN};{RUNNER}\n"])
