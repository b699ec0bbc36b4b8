"""The wire contract between MEMO's services, defined once and imported by every end.

Event records mirror the C structs in bpf/memo.h (tests/collector/test_contract.py checks that they
agree); the collector adds the fields it resolves in user space (exe, argv, cgroup path, file path).
API models are what the inference service serves and the prefetcher and the CLI read.
"""

from __future__ import annotations

import functools
import posixpath
import re
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

API_VERSION = "v1"
EVENTS_PATH = "/v1/events"
FEEDBACK_PATH = "/v1/feedback"
PREDICTIONS_CHANGES_PATH = "/v1/predictions/changes"
PREDICTIONS_PATH = "/v1/predictions"
EXPLAIN_PATH = "/v1/explain"
USERS_PATH = "/v1/users"
APPS_PATH = "/v1/apps"
SOURCES_PATH = "/v1/sources"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


def profile_path(app: str) -> str:
    """GET path of an app's launch profile (the app name URL-encoded, slashes included)."""
    return f"{APPS_PATH}/{quote(app, safe='')}/profile"


MAX_BATCH_EVENTS = 10_000
"""Largest batch the inference service accepts; the collector never sends more."""
MAX_UID = 2**32 - 2  # (uid_t)-1 is "no user"
MAX_BYTES = 2**50  # a petabyte: more than any one action can move
MAX_TS = 4_102_444_800.0  # 2100-01-01: later Unix times are corrupt
MAX_PID = 4_194_304  # PID_MAX_LIMIT
MAX_U64 = 2**64 - 1
MAX_PAGE_INDEX = 2**52  # a page of a file below 2^64 bytes
MAX_RANGE_PAGES = 2**18  # 1 GiB in one pagecache record: the collector never merges past it
MAX_PATH = 4096  # PATH_MAX
MAX_ARGS = 256  # argv entries kept per exec (the collector truncates; the models read the first few)
MAX_ARG_CHARS = 4096
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
"""Trees whose files are never profiled or read ahead: their files are not page cache (or reading them
acts, like /dev's), and a path there in a profile is an attack or a bug."""


def _storable(text: str) -> str:
    """Text that crosses a boundary into the store: no NUL, no lone surrogate (unstorable in UTF-8).
    Other control characters are legal in a program's path, so they pass (and are escaped on display)."""
    if any(c == "\0" or 0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise ValueError("NUL or unpaired surrogate")
    return text


StorableName = Annotated[str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(_storable)]
StorableText = Annotated[str, Field(max_length=MAX_PATH), AfterValidator(_storable)]


_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def is_file_path(text: str) -> bool:
    """A path root may open for the page cache: absolute and normalised (no `.`, `..`, `//`), without
    control characters or lone surrogates, at most PATH_MAX, and not under /proc, /sys or /dev.
    Paths of usual length are remembered: each of a profile's thousands of paths is checked by the
    service that builds it, the prefetcher that parses it and again before it opens the file, at every
    round (the cache holds at most PATHS_REMEMBERED x REMEMBERED_LEN characters)."""
    return _remembered_file_path(text) if len(text) <= REMEMBERED_LEN else _is_file_path(text)


PATHS_REMEMBERED = 16384  # more than the files of a plan: a cycle through them must not evict itself
REMEMBERED_LEN = 256


def _is_file_path(text: str) -> bool:
    if not text.startswith("/") or text.startswith("//") or len(text) > MAX_PATH:
        return False
    if _CONTROL_OR_SURROGATE.search(text):
        return False
    if posixpath.normpath(text) != text:
        return False
    return not any(text == root or text.startswith(root + "/") for root in FORBIDDEN_ROOTS)


_remembered_file_path = functools.lru_cache(maxsize=PATHS_REMEMBERED)(_is_file_path)


def _file_path(text: str) -> str:
    if text and not is_file_path(text):
        raise ValueError("not an absolute, normalised path outside /proc, /sys and /dev without control "
                         "characters")
    return text


def _program_path(text: str) -> str:
    if text and not text.startswith("/"):
        raise ValueError("not an absolute path")
    return text


FilePath = Annotated[str, Field(max_length=MAX_PATH), AfterValidator(_file_path)]
"""A file in a profile, or "" for one the collector could not name (such a range is never read)."""
ProgramPath = Annotated[StorableText, AfterValidator(_program_path)]
"""/proc/PID/exe: absolute, or "" when the process was gone; any other character a path may hold."""
Arg = Annotated[str, Field(max_length=MAX_ARG_CHARS), AfterValidator(_storable)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ts_ns: int = Field(ge=0, le=2**63 - 1, description="CLOCK_MONOTONIC (bpf_ktime_get_ns) nanoseconds")
    pid: int = Field(ge=0, le=MAX_PID)


class ExecEvent(_Record):
    """A successful execve: one per sched:sched_process_exec."""

    type: Literal["exec"] = "exec"
    ppid: int = Field(ge=0, le=MAX_PID)
    uid: int = Field(ge=0, le=MAX_UID)
    cgroup_id: int = Field(ge=0, le=MAX_U64)
    comm: Annotated[StorableText, Field(max_length=64)]
    filename: StorableText = Field(description="as passed to execve: may be relative")
    # Resolved by the collector (empty when the process was gone before it looked).
    exe: ProgramPath = Field("", description="/proc/PID/exe; for a process already gone, a relative "
                             "filename made absolute against its cwd or its parent's")
    argv: list[Arg] = Field(default_factory=list, max_length=MAX_ARGS)
    cgroup_path: StorableText = ""
    cwd: ProgramPath = Field("", description="working directory at exec: what a relative script name in argv "
                             "(`python3 tool.py`) is resolved against")
    wall_ts: float = Field(0.0, ge=0.0, le=MAX_TS, allow_inf_nan=False,
                           description="Unix time (s) of the event, for time-of-day context")


class ForkEvent(_Record):
    """A new process (not a thread): pid is the child, ppid the parent."""

    type: Literal["fork"] = "fork"
    ppid: int = Field(ge=0, le=MAX_PID)
    uid: int = Field(ge=0, le=MAX_UID)
    comm: Annotated[StorableText, Field(max_length=64)]


class ExitEvent(_Record):
    """A process (thread-group leader) exit with the counters gathered in the kernel over its life."""

    type: Literal["exit"] = "exit"
    exit_code: int = Field(ge=-(2**31), le=2**31 - 1)
    minflt: int = Field(ge=0, le=MAX_U64)
    majflt: int = Field(ge=0, le=MAX_U64)
    swapin: int = Field(ge=0, le=MAX_U64)


class FaultsEvent(_Record):
    """Page-fault counts of a live process since its previous faults record (periodic)."""

    type: Literal["faults"] = "faults"
    minflt: int = Field(ge=0, le=MAX_U64)
    majflt: int = Field(ge=0, le=MAX_U64)


class PageCacheEvent(_Record):
    """File pages a process used (read, mapped or faulted) in its launch window, whether the page cache
    held them or not: its launch profile. Sent once the window is over or the process has exited."""

    type: Literal["pagecache"] = "pagecache"
    dev: int = Field(ge=0, le=2**32 - 1)
    ino: int = Field(ge=0, le=MAX_U64)
    index: int = Field(ge=0, le=MAX_PAGE_INDEX, description="first page index in the file")
    nr_pages: int = Field(ge=1, le=MAX_RANGE_PAGES)
    path: FilePath = Field("", description="resolved by the collector; empty if unknown")


class SwapinEvent(_Record):
    """Swap-ins of a process since its previous swapin record."""

    type: Literal["swapin"] = "swapin"
    memcg_id: int = Field(ge=0, le=MAX_U64)
    count: int = Field(ge=1, le=MAX_U64)


class LostEvent(_Record):
    """Records the kernel could not deliver (ring buffer full): counted, never silent."""

    type: Literal["lost"] = "lost"
    count: int = Field(ge=1, le=MAX_U64)


Event = Annotated[
    ExecEvent | ForkEvent | ExitEvent | FaultsEvent | PageCacheEvent | SwapinEvent | LostEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES = ("exec", "fork", "exit", "faults", "pagecache", "swapin", "lost")


class EventBatch(BaseModel):
    """What the collector POSTs to /v1/events. (source_id, seq) makes delivery idempotent."""

    model_config = ConfigDict(extra="forbid")

    source_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    seq: int = Field(ge=0, description="per-source batch number, increasing by one per batch")
    events: list[Event] = Field(max_length=MAX_BATCH_EVENTS)


class EventAck(BaseModel):
    source_id: str
    seq: int = Field(description="highest batch sequence number stored for this source")
    accepted: int = Field(description="events stored by this request (0 for a duplicate)")
    duplicate: bool


class SourceStats(BaseModel):
    """GET /v1/sources: what the service holds from each collector (tests check delivery with it)."""

    source_id: str
    seq: int = Field(description="highest batch sequence number stored")
    batches: int
    events: int


# ---------------------------------------------------------------- predictions and profiles


class Prediction(BaseModel):
    app: str
    probability: float = Field(ge=0.0, le=1.0)
    horizon_s: float = Field(ge=0.0, description="expected seconds until the launch")
    profile_bytes: int = Field(ge=0, description="bytes in the app's launch profile, as last built (it may "
                               "lag new pages; profile_version does not)")
    profile_version: int = Field(0, ge=0, description="changes whenever the profile gains pages: a client "
                                 "holding the profile of this version (AppProfile.version) need not fetch it "
                                 "again")
    models: dict[str, float] = Field(default_factory=dict, description="each model's score, to explain")


class Predictions(BaseModel):
    uid: int
    generated_at: float = Field(description="Unix time (s)")
    last_app: str | None = None
    predictions: list[Prediction]


class PredictionChanges(BaseModel):
    """GET /v1/predictions/changes?since=V&wait_s=T: answered as soon as a ranking changed after version V
    (a long-poll: a client learns of new predictions when they change, not by polling)."""

    version: int = Field(ge=0, description="moves on every ranking change; pass it back as `since`")
    launches: int = Field(ge=0, description="launches seen since the service started: a move means a "
                          "program is starting now")
    uids: list[int] = Field(description="users whose ranking changed after `since`")


class ProfileRange(BaseModel):
    path: Annotated[FilePath, Field(min_length=1)]
    offset: int = Field(ge=0, le=MAX_PAGE_INDEX * 4096, description="bytes")
    length: int = Field(ge=1, le=MAX_BYTES, description="bytes")


class AppProfile(BaseModel):
    app: str
    launches: int = Field(ge=0, description="launches the profile was learnt from")
    bytes: int = Field(ge=0)
    ranges: list[ProfileRange]
    version: int = Field(0, ge=0, description="the Prediction.profile_version this profile is")


class AppInfo(BaseModel):
    app: str
    launches: int
    last_seen: float | None
    profile_bytes: int


class FeedbackItem(BaseModel):
    """What one prefetcher action was worth, reported once its outcome is known."""

    model_config = ConfigDict(extra="forbid")

    app: StorableName
    uid: int = Field(ge=0, le=MAX_UID)
    action: Literal["pagecache", "swapin", "swappiness"]
    ts: float = Field(ge=0, le=MAX_TS, allow_inf_nan=False, description="Unix time (s) of the action")
    bytes_prefetched: int = Field(0, ge=0, le=MAX_BYTES)
    bytes_used: int = Field(0, ge=0, le=MAX_BYTES, description="prefetched bytes the launch then used (hit)")
    bytes_wasted: int = Field(0, ge=0, le=MAX_BYTES, description="prefetched bytes evicted or never used")
    launched: bool = Field(False, description="the app was launched within the horizon")


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackItem] = Field(max_length=MAX_BATCH_EVENTS)


class FeedbackSummary(BaseModel):
    """GET /v1/feedback: what the prefetcher's actions on one app were worth, summed."""

    app: str
    actions: int
    bytes_prefetched: int
    bytes_used: int
    bytes_wasted: int
    launched: int
    hit_rate: float = Field(description="bytes used / bytes prefetched")
    waste_rate: float = Field(description="bytes wasted / bytes prefetched")


def rate(part: int, whole: int) -> float:
    """part / whole, 0 when there is no whole (a hit or waste rate of nothing prefetched)."""
    return part / whole if whole else 0.0


class FeedbackAck(BaseModel):
    accepted: int


class ModelScore(BaseModel):
    name: str
    score: float = Field(description="the member's own score for the app (0 when it did not rank it)")
    rank: int | None = Field(None, description="where the member alone puts the app (1 = first); null if "
                             "it did not rank it")
    weights: dict[str, float] = Field(default_factory=dict, description="the mixer's weights, for this user, "
                                      "on the member's signals: lp (log-probability), rr (1/rank), top "
                                      "(ranked first), p (probability)")


class Explanation(BaseModel):
    """GET /v1/explain: why an app has its place in a user's ranking."""

    uid: int
    app: str
    rank: int | None = Field(description="the app's place in the user's ranking, as GET /v1/predictions "
                             "serves it now; null if not ranked")
    probability: float
    models: list[ModelScore]


class UserInfo(BaseModel):
    """GET /v1/users: one user the service has a model for."""

    uid: int
    launches: int
    last_app: str | None


class ApiError(BaseModel):
    detail: str = Field(description="what is wrong, for a person")
    errors: list[dict[str, object]] = Field(default_factory=list, description="validation errors, if any")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    uptime_s: float
    detail: dict[str, str | int | float | bool] = Field(default_factory=dict)
