"""MEMO's configuration: one object, read from a TOML file, overridden by the environment.

Order (later wins): embedded defaults < TOML file (``$MEMO_CONFIG``, else /etc/memo/memo.toml if it
exists) < environment variables ``MEMO_<SECTION>__<KEY>`` (e.g. ``MEMO_COLLECTOR__LAUNCH_WINDOW_S=5``).
deploy/memo.toml documents every key with its default.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SYSTEM_CONFIG = Path("/etc/memo/memo.toml")


def _default_run_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/memo")
    return Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/memo-{os.geteuid()}") / "memo"


def _default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/memo")
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "memo"


SOCKET_NAME = "inference.sock"
USER_SOCKET_NAME = "inference-user.sock"
PORT_FILE_NAME = "inference.port"
"""The run directory's files that more than one program opens; memo.runtime.RunDir names the rest."""

class PathsConfig(BaseModel):
    run_dir: Path = Field(default_factory=_default_run_dir, description="sockets, pid files, logs")
    data_dir: Path = Field(default_factory=_default_data_dir, description="database, spool, models")

    @property
    def socket(self) -> Path:
        """The inference service's Unix socket (ingest, feedback and the read-only API)."""
        return self.run_dir / SOCKET_NAME

    @property
    def port_file(self) -> Path:
        """The read-only TCP listener's port (written at start; it may be chosen then: port 0)."""
        return self.run_dir / PORT_FILE_NAME

    @property
    def inference_dir(self) -> Path:
        """The inference service's own folder (database, models' state): its user's alone."""
        return self.data_dir / "inference"

    @property
    def user_socket(self) -> Path:
        """The socket any local user may ask about themself (read-only, by SO_PEERCRED)."""
        return self.run_dir / USER_SOCKET_NAME


class CollectorConfig(BaseModel):
    source_id: str = Field("", description="identity of this collector's stream; empty = hostname")
    launch_window_s: float = Field(
        10.0, gt=0, description="seconds after exec during which the file pages a program uses make its "
        "launch profile")
    batch_max_events: int = Field(2000, ge=1, le=10_000, description="most events in one batch sent")
    flush_interval_s: float = Field(0.02, gt=0, description="longest an exec record waits before it is sent "
                                    "(predictions follow each launch)")
    bulk_flush_s: float = Field(1.0, gt=0, description="longest any other record (forks, exits, pages, "
                                "faults) waits: fewer, larger batches cost less to spool, send and store")
    faults_interval_s: float = Field(5.0, gt=0, description="period of per-process fault records")
    fault_source: Literal["memcg", "page_fault_user"] = Field(
        "memcg", description="count faults on memcg:count_memcg_events PGFAULT (one eBPF program per "
        "fault, shared with swap-ins; falls back when that tracepoint is missing) or on "
        "exceptions:page_fault_user (user-mode faults only, a second program per fault)")
    spool_max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024, description="on-disk spool bound")
    ringbuf_pages: int = Field(1024, ge=16, description="ring buffer size in pages (power of two)")
    bpf_pin_dir: Path = Field(Path("/sys/fs/bpf/memo"), description="where programs and maps are pinned")
    keep_pins: bool = Field(False, description="leave programs and maps pinned after exit")


class InferenceConfig(BaseModel):
    host: str = Field("127.0.0.1", description="read-only HTTP API address (keep it on loopback)")
    port: int = Field(8077, ge=0, le=65535, description="read-only HTTP API port (0 = any free port)")
    socket_mode: int = Field(0o660, description="mode of the Unix socket (432 = 0o660)")
    socket_group: str = Field("memo", description="group owning the socket, if it exists")
    run_as: str = Field("memo", description="started as root (memo up), inference binds its sockets, "
                        "then runs as this user, owner of <data_dir>/inference; empty, or no such user = "
                        "stays root (make setup creates the user memo)")
    tcp_user_data: bool = Field(False, description="serve per-user data (predictions, apps, profiles, "
                                "feedback) on TCP too: whoever reaches the port then reads every user's "
                                "launches")
    models: list[str] = Field(
        default_factory=lambda: ["mfu", "mru", "markov", "ppm", "lstm"],
        description="predictors that join the ensemble; add \"llm\" for the vLLM member (about 1 GB while it "
        "runs, and no measured gain yet on the public traces)",
    )
    default_k: int = Field(5, ge=1, le=100, description="predictions returned when k is not given")
    prior_min_users: int = Field(
        3, ge=1, description="an app enters the cross-user prior, which every user's predictions back "
        "off to, only once this many distinct users launched it (until then each user's prior holds only "
        "their own launches of it): a user's own programs never show in another user's predictions")
    ignore: list[str] = Field(default_factory=list, description="apps never counted as launches (globs)")
    allow: list[str] = Field(default_factory=list, description="apps always counted as launches (globs)")
    wrappers: list[str] = Field(
        default_factory=list, description="more programs (basenames) that pass the launch on to the "
        "program they run, besides the built-in list in inference/segment.py (env, nice, ionice, taskset, "
        "sudo, su, runuser, setpriv, pkexec, bwrap, flatpak, snap, firejail, xdg-open, gtk-launch, ...)")


class LLMConfig(BaseModel):
    backend: Literal["auto", "engine", "remote", "off"] = Field(
        "auto", description="auto = the vLLM engine (a child process of inference) when installed, else off; "
        "used only when inference.models lists \"llm\"")
    model: str = Field("", description="model directory or name; empty = the converted SmolLM2")
    url: str = Field("", description="remote vLLM OpenAI-compatible server, for backend=remote")
    timeout_s: float = Field(5.0, gt=0, description="an LLM call slower than this is dropped")
    max_concurrency: int = Field(1, ge=1, description="LLM calls in flight at once")
    kv_cache_mb: int = Field(16, ge=4, le=65536, description="the engine's KV cache, MiB (16 MiB hold 700 "
                             "tokens of SmolLM2, more than one prompt)")
    max_model_len: int = Field(512, ge=128, le=8192, description="longest prompt the engine takes, tokens")
    release_psi: float = Field(
        10.0, ge=0, description="end the engine (and give back its memory) while memory pressure (PSI some "
        "avg10, %) is above this; 0 = never")
    restart_calm_s: float = Field(
        120.0, ge=0, description="start the engine again once pressure has stayed below half of release_psi "
        "this long")


class PrefetcherConfig(BaseModel):
    poll_interval_s: float = Field(
        1.0, gt=0, description="while no ranking changes (the service tells at once when one does), how "
        "often to check whether the kernel evicted what was prefetched")
    min_probability: float = Field(
        0.3, ge=0, le=1, description="read a page range when the chance a predicted launch uses it (summed "
        "over the predictions whose profiles hold it: probability x the share of that app's past prefetches "
        "used) is above this; swap-in and cgroup protection act on predictions above it")
    evict_cost: float = Field(
        0.4, ge=0, le=1, description="added to min_probability for the ranges that no longer fit in free "
        "memory: reading them evicts page cache that may itself be used")
    budget_share: float = Field(0.1, gt=0, le=1, description="share of MemAvailable usable per cycle")
    per_app_cap_bytes: int = Field(
        512 * 1024 * 1024, ge=0,
        description="most bytes of one program's profile in a plan (chromium uses ~330 MB at start)")
    psi_some_avg10_max: float = Field(
        10.0, ge=0, description="do nothing above this memory pressure: % of time some task stalled on "
        "memory (PSI some), over the last interval, else avg10")
    swappiness_low: int = Field(10, ge=0, le=200, description="swappiness set for soon-used cgroups")
    collapse_huge: bool = Field(
        True, description="after a swap-in, copy fully populated 2 MB extents into huge pages "
        "(MADV_COLLAPSE): their first touch is then as fast as if never swapped")
    madv_cold: bool = Field(False, description="MADV_COLD processes predicted idle for long")
    dry_run: bool = Field(False, description="log what would be done, do nothing")


class ServicesConfig(BaseModel):
    confine: bool = Field(
        True, description="under `memo up` (root), run each service in a cgroup of its own (memo/<service>) "
        "with the weights and ceilings below (memo.slice does it for systemd)")
    cpu_weight: int = Field(
        10, ge=1, le=10000, description="CPU weight of MEMO's group (a default group has 100)")
    cpu_idle: bool = Field(
        True, description="MEMO's group in the idle CPU scheduling class (cgroup cpu.idle, Linux 5.15+; "
        "systemd CPUWeight=idle): a user's program that wakes always takes the CPU from MEMO's threads, "
        "which run on what the CPUs leave; false = cpu_weight alone")
    io_weight: int = Field(
        10, ge=1, le=1000, description="I/O weight of MEMO's group (a default group has 100)")
    inference_memory_high: int = Field(
        2048 * 1024 * 1024, ge=0, description="memory ceiling of inference with its LLM engine and LSTM "
        "trainer processes, bytes (cgroup v2 memory.high: above it the kernel throttles and reclaims "
        "them; v1 memory.soft_limit_in_bytes: reclaimed first under global pressure); 0 = none")
    collector_memory_high: int = Field(
        512 * 1024 * 1024, ge=0,
        description="the same for the collector (its eBPF compile step needs ~250 MB)")
    log_max_bytes: int = Field(
        16 * 1024 * 1024, ge=0, description="under `memo up`, a service's log past this size is moved to "
        "<name>.log.1 (one generation kept) and started again; 0 = never")
    watchdog_s: float = Field(
        60.0, ge=0, description="under `memo up`, a running service that is stopped (SIGSTOP), or an "
        "inference that does not answer /healthz or reports itself degraded, for this long is killed and "
        "restarted; 0 = never")


class Config(BaseSettings):
    """Every knob of MEMO, with its default."""

    model_config = SettingsConfigDict(env_prefix="MEMO_", env_nested_delimiter="__", extra="forbid")

    paths: PathsConfig = Field(default_factory=PathsConfig)
    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    services: ServicesConfig = Field(default_factory=ServicesConfig)
    prefetcher: PrefetcherConfig = Field(default_factory=PrefetcherConfig)
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml)


def config_file() -> Path | None:
    """The TOML file in force: $MEMO_CONFIG (must exist), else the system one if present."""
    explicit = os.environ.get("MEMO_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"MEMO_CONFIG={explicit} does not exist")
        return path
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load(**overrides: Any) -> Config:
    """A fresh Config (file + environment), with explicit overrides on top (tests use these)."""
    return Config(**overrides)


@cache
def get() -> Config:
    """The process-wide Config, read once."""
    return load()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def render_toml(cfg: Config | None = None) -> str:
    """The configuration as a commented TOML file: every key, its value and what it means."""
    cfg = cfg or load()
    out = ["# MEMO configuration. Every key with its default; environment overrides: MEMO_<SECTION>__<KEY>."]
    top = [(n, f) for n, f in Config.model_fields.items() if not isinstance(getattr(cfg, n), BaseModel)]
    for name, field in top:
        out += [f"# {field.description or name}", f"{name} = {_toml_value(getattr(cfg, name))}"]
    for section in Config.model_fields:
        model = getattr(cfg, section)
        if not isinstance(model, BaseModel):
            continue
        out += ["", f"[{section}]"]
        for key, sub in type(model).model_fields.items():
            if sub.description:
                out.append(f"# {sub.description}")
            out.append(f"{key} = {_toml_value(getattr(model, key))}")
    return "\n".join(out) + "\n"
