"""Where a server's CPU goes: py-spy's collapsed stacks sorted into a few categories.

``py-spy record --format raw`` writes one line per distinct stack, root first::

    thread (42): MainThread;<module> (/x/__main__.py:12);...;execute (/x/sqlalchemy/base.py:9) 17

(frames ``function (file:line)`` joined by ``;``, then the number of samples; the
first pseudo-frame names the thread, by OS thread id and Python name, when py-spy
ran with ``--threads``).

Each frame is recognised by its file (and, for a few, its function) as one of
:class:`Category`, or not at all (the standard library outside asyncio and logging,
third-party code :data:`FRAME_RULES` does not name: these belong to whoever called
them); the thread pseudo-frame by the thread's name (:data:`THREAD_RULES`), as the
outermost frame of all. A sample then goes to one category by this rule:

1. **Storage and telemetry own what they call.** If the stack holds a storage or
   telemetry frame, the outermost such frame decides: the span exporter's gRPC call
   and protobuf encoding are telemetry, SQLAlchemy's asyncio plumbing is storage.
2. **Otherwise the innermost recognised frame wins.** A library's own time is its
   own (``grpc/aio/_call.py`` under a servicer is gRPC), and application code that
   gRPC's dispatch or an asyncio task runs is application code (``rest``), not the
   loop that called it.
3. A stack with no recognised frame is ``rest``; a stack with no frame at all (only
   the thread's, whose name says nothing: py-spy caught it between frames) is
   *empty*: it counts towards no category, so the thread's CPU is split over the
   samples that say where it went.

What py-spy cannot see, and where it lands: it reads Python frames only. Native code
counts where it was called from: SQLite's C library as the storage frame that called
it, a message's C (de)serialisation as ``protobuf`` when the Python frame that called
it is gRPC's ``_common`` (de)serialiser or the runtime's decoder. The event loop's
thread, running native code with no Python frame below the loop (uvloop itself, and
the callbacks it makes into gRPC's Cython aio layer, which answer calls and serialise
responses), counts as ``event_loop``: that category is the loop *and the native
code it runs*, so the gRPC figure is a lower bound. gRPC's completion-queue poller
thread (Cython target ``_poll_wrapper``, no Python frame) counts as ``grpc`` by its
name, and so do gRPC core's native threads, which py-spy never samples, by their OS
name (:data:`NATIVE_THREADS`, used by :mod:`shop.bench.breakdown`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

Stack = tuple[str, ...]


class Category(Enum):
    GRPC = "grpc"
    STORAGE = "storage"
    TELEMETRY = "telemetry"
    PROTOBUF = "protobuf"
    EVENT_LOOP = "event_loop"
    REST = "rest"

    @property
    def title(self) -> str:
        return TITLES[self]


TITLES = {
    Category.GRPC: "gRPC",
    Category.STORAGE: "storage",
    Category.TELEMETRY: "telemetry",
    Category.PROTOBUF: "protobuf/validation",
    Category.EVENT_LOOP: "event loop",
    Category.REST: "rest",
}

# Outermost frame of these decides (rule 1 above).
OWNING = frozenset({Category.STORAGE, Category.TELEMETRY})


@dataclass(frozen=True)
class Rule:
    """Frames whose file matches ``file`` (and function ``function``, if given)."""

    category: Category
    file: re.Pattern[str]
    function: re.Pattern[str] | None = None


def _rule(category: Category, file: str, function: str | None = None) -> Rule:
    # Anchored at a path-segment boundary: full paths (--full-filenames) and py-spy's
    # shortened ones ("grpc/aio/_call.py") match alike.
    return Rule(
        category,
        re.compile(rf"(?:^|/){file}"),
        None if function is None else re.compile(rf"^(?:{function})$"),
    )


# First match wins, so the narrow rules come before the broad ones they carve out of,
# and telemetry's libraries first of all: their paths hold other names
# (opentelemetry/exporter/otlp/proto/grpc/, opentelemetry/instrumentation/asyncio/).
FRAME_RULES: tuple[Rule, ...] = (
    _rule(Category.TELEMETRY, r"(?:opentelemetry|prometheus_client)/"),
    # gRPC calls the message's (de)serialiser here; the C protobuf time lands on it.
    _rule(Category.PROTOBUF, r"grpc/_common\.py$", r"_transform|serialize|deserialize"),
    _rule(Category.PROTOBUF, r"google/protobuf/"),
    _rule(Category.PROTOBUF, r"[^/]*_pb2\.py$"),
    _rule(Category.PROTOBUF, r"shop/runtime/(?:validation|decoding)\.py$"),
    _rule(Category.PROTOBUF, r"shop/api/orderlines\.py$"),
    _rule(Category.GRPC, r"grpc(?:_[a-z]+)?/"),  # grpc, grpc.aio, grpc._cython, grpc_health...
    _rule(Category.GRPC, r"[^/]*_pb2_grpc\.py$"),
    _rule(Category.STORAGE, r"(?:sqlite3|_sqlite3|aiosqlite|sqlalchemy|asyncpg|greenlet)(?:/|\.)"),
    _rule(Category.STORAGE, r"shop/runtime/database(?:\.py$|/)"),
    _rule(Category.STORAGE, r"shop/[^/]+/store(?:\.py$|/)"),
    _rule(Category.TELEMETRY, r"shop/runtime/(?:metrics|tracing|sampling|logs)\.py$"),
    _rule(Category.TELEMETRY, r"logging/"),
    _rule(Category.EVENT_LOOP, r"(?:asyncio|uvloop)/"),
    # Everything else of the shop's own: servicers, the placement saga, the runtime's
    # interceptors, auth, channels, server bootstrap.
    # (Only the shop's package, not any folder that happens to be called "shop".)
    Rule(Category.REST, re.compile(r"(?:^|/src/|/site-packages/)shop/")),
)

# The thread pseudo-frame py-spy writes with --threads: "thread (TID): NAME", TID the
# OS thread id; Python names a thread "Thread-N (target)" after its target function.
THREAD_FRAME = re.compile(r"^thread \((?P<tid>[0-9a-fA-Fx]+)\)(?:: (?P<name>.*))?$")
THREAD_RULES: tuple[tuple[re.Pattern[str], Category], ...] = (
    # gRPC aio's completion-queue poller: a Cython target, so no Python frame below.
    (re.compile(r"\(_poll_wrapper\)$"), Category.GRPC),
    # prometheus_client's /metrics server (the only socketserver in a replica).
    (re.compile(r"\(serve_forever\)$"), Category.TELEMETRY),
    (re.compile(r"^OtelBatch"), Category.TELEMETRY),
    (re.compile(r"\(_connection_worker_thread\)$"), Category.STORAGE),  # aiosqlite
)
# Threads py-spy never sees (no Python in them), by their OS name (/proc/.../comm, 15
# characters at most): gRPC core's own (EventEngine workers and their lifeguard, the
# timer manager, executors). Every Python thread is plain "python" on Python 3.11.
NATIVE_THREADS: tuple[tuple[re.Pattern[str], Category], ...] = (
    (
        re.compile(r"^(?:grpc|event_engine|lifeguard|default-execut|resolver-execu|timer)"),
        Category.GRPC,
    ),
)

# "function (file:line)"; native frames (--native) are "symbol (library)".
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def thread_category(name: str) -> Category | None:
    """The category of a thread by its Python name (py-spy's pseudo-frame), if any."""
    return next((category for pattern, category in THREAD_RULES if pattern.search(name)), None)


def native_thread_category(comm: str) -> Category | None:
    """The category of a thread py-spy cannot see, by its OS name, if known."""
    return next((category for pattern, category in NATIVE_THREADS if pattern.search(comm)), None)


def frame_category(frame: str) -> Category | None:
    """The category one frame belongs to, or None for a frame the table does not name."""
    thread = THREAD_FRAME.match(frame)
    if thread is not None:
        return thread_category(thread.group("name") or "")
    match = _FRAME.match(frame)
    if match is None:
        return None
    file, function = match.group("file"), match.group("function")
    for rule in FRAME_RULES:
        if rule.file.search(file) and (rule.function is None or rule.function.match(function)):
            return rule.category
    return None


def thread_id(stack: Stack) -> int | None:
    """The OS thread id of py-spy's leading thread pseudo-frame, if the stack has one."""
    thread = THREAD_FRAME.match(stack[0]) if stack else None
    return None if thread is None else int(thread.group("tid"), 0)


def python_thread_names(stacks: Iterable[Stack]) -> dict[int, str]:
    """OS thread id -> the Python name py-spy's pseudo-frames give it."""
    names = {}
    for stack in stacks:
        thread = THREAD_FRAME.match(stack[0]) if stack else None
        if thread is not None and thread.group("name"):
            names[int(thread.group("tid"), 0)] = thread.group("name")
    return names


def classify(stack: Stack) -> Category | None:
    """The category of one sample (frames root first, the thread's pseudo-frame first
    if any); None for a stack with no frame at all, and no thread name to go by."""
    categories = [frame_category(frame) for frame in stack]
    if len(stack) == (1 if thread_id(stack) is not None else 0):
        return categories[0] if categories else None
    for category in categories:  # outermost first
        if category in OWNING:
            return category
    for category in reversed(categories):  # innermost first
        if category is not None:
            return category
    return Category.REST


def parse_collapsed(lines: Iterable[str]) -> Counter[Stack]:
    """py-spy's raw output as stack -> samples (several lines of one stack add up)."""
    stacks: Counter[Stack] = Counter()
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        text, _, count = line.rpartition(" ")
        try:
            samples = int(count)
        except ValueError:
            raise ValueError(f"line {number}: no sample count at the end: {line[:200]!r}") from None
        stacks[tuple(frame for frame in text.split(";") if frame)] += samples
    return stacks


@dataclass(frozen=True)
class CategoryCounts:
    """Samples per category of one process, and those with no frame to judge by."""

    samples: Mapping[Category, int]
    empty: int

    @property
    def attributed(self) -> int:
        return sum(self.samples.values())

    @property
    def total(self) -> int:
        return self.attributed + self.empty

    def shares(self) -> dict[Category, float] | None:
        """Each category's share of the attributed samples; None without any."""
        attributed = self.attributed
        if attributed == 0:
            return None
        return {category: self.samples.get(category, 0) / attributed for category in Category}


def count_categories(stacks: Mapping[Stack, int]) -> CategoryCounts:
    samples: Counter[Category] = Counter()
    empty = 0
    for stack, n in stacks.items():
        category = classify(stack)
        if category is None:
            empty += n
        else:
            samples[category] += n
    return CategoryCounts({category: samples.get(category, 0) for category in Category}, empty)


def count_by_thread(stacks: Mapping[Stack, int]) -> dict[int | None, CategoryCounts]:
    """:func:`count_categories` per OS thread id (None: stacks without a thread frame)."""
    grouped: dict[int | None, dict[Stack, int]] = {}
    for stack, n in stacks.items():
        grouped.setdefault(thread_id(stack), {})[stack] = n
    return {tid: count_categories(group) for tid, group in grouped.items()}
