"""The vLLM engine in a process of its own: ``python -m inference.llm.engine_proc --model DIR``.

Why a process: the engine (torch, vLLM, the weights, the KV cache) is about 1 GB that the inference
service can hand back to the system by ending it, whole, under memory pressure, and start again later;
it computes at the lowest CPU and I/O priority without touching the service's own threads; and it dies
with the service (PR_SET_PDEATHSIG), so a killed service never leaves an engine behind. vLLM runs
in-process here (VLLM_ENABLE_V1_MULTIPROCESSING=0): one process, not an engine core plus a worker that
each load torch again.

Protocol, one JSON object per line: the engine writes {"ready": true, "pss_mb": N} once loaded (or
{"error": "..."} and exits), then answers each {"prompt": "..."} read on stdin with {"top": {token:
logprob}} or {"error": "..."}. Its own stdout is the protocol channel; whatever vLLM prints goes to
stderr (the service's log).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys

from memo import helpers

TOP = 20
# Optional packages vLLM imports when present but this engine never uses (vLLM falls back to a
# placeholder for each): Triton has no CPU backend here, cv2 serves video inputs, OpenTelemetry
# tracing is off. Kept out of sys.modules they cost nothing: about 100 MB of PSS less.
UNUSED = ("triton", "cv2", "opentelemetry")


def _end_idle_groups() -> None:
    """vLLM sets up torch.distributed groups (gloo) even for one CPU process, and each group's
    gloo_tcp_loop thread wakes about 100 times a second: ~1,300 wakeups/s and 1.5 % of a core while the
    engine waits for a prompt. A world of one never communicates, so the groups end here; the
    process then exits without vLLM's teardown of them (``os._exit`` below)."""
    import torch.distributed as dist
    from vllm.distributed import parallel_state

    if not dist.is_initialized() or dist.get_world_size() != 1:
        return
    dist.destroy_process_group()
    for value in vars(parallel_state).values():
        if isinstance(value, parallel_state.GroupCoordinator):
            value.cpu_group = value.device_group = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a converted model directory")
    ap.add_argument("--kv-cache-mb", type=int, default=16, help="KV cache, MiB")
    ap.add_argument("--max-model-len", type=int, default=512, help="longest prompt, tokens")
    ap.add_argument("--parent", type=int, default=os.getppid(), help="die with this pid")
    args = ap.parse_args(argv)
    out = helpers.protocol_channel()
    if not helpers.bind_to_parent(args.parent):  # the service died before the prctl took effect
        return 1
    helpers.lowest_priority()

    def say(obj: dict[str, object]) -> None:
        os.write(out, (json.dumps(obj) + "\n").encode())

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights are local; never reach for a hub
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)  # would override kv_cache_memory_bytes (whole GiB)
    for name in UNUSED:
        sys.modules.setdefault(name, None)  # type: ignore[assignment]  # None: "import fails"
    try:
        import vllm._custom_ops
        from vllm import LLM, SamplingParams

        # oneDNN's prepacked GEMMs keep a second copy of every weight (and grow a packed copy per
        # prompt length they see): about 110 MB more than torch's own bf16 linear, which is slower
        # per call on this model (bench/llm.py p50 55 -> 78-99 ms; off the request path, nice 19).
        vllm._custom_ops._supports_onednn = False

        llm = LLM(model=args.model, dtype="bfloat16", max_model_len=args.max_model_len, enforce_eager=True,
                  enable_prefix_caching=True, seed=0, kv_cache_memory_bytes=args.kv_cache_mb << 20,
                  max_num_seqs=1, max_num_batched_tokens=args.max_model_len)
        params = SamplingParams(max_tokens=1, logprobs=TOP, temperature=0.0)
        llm.generate(["warm-up\n"], params, use_tqdm=False)  # the first call is ~20x slower than the rest
    except Exception as exc:  # a broken install, a bad model: said on the channel, then exit
        say({"error": f"{type(exc).__name__}: {exc}"})
        return 2
    try:
        _end_idle_groups()
    except Exception as exc:  # another vLLM: the engine works as before, its idle threads stay
        print(f"engine: torch.distributed groups kept ({type(exc).__name__}: {exc})", file=sys.stderr)
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)  # loading leaves ~100 MB of freed heap behind
    say({"ready": True, "pss_mb": helpers.pss_kb() // 1024})
    for line in sys.stdin:
        try:
            prompt = json.loads(line)["prompt"]
            if not isinstance(prompt, str):
                raise TypeError("prompt must be a string")
            res = llm.generate([prompt], params, use_tqdm=False)
            step = res[0].outputs[0].logprobs[0]
            say({"top": {lp.decoded_token or "": lp.logprob for lp in step.values()}})
        except Exception as exc:  # one bad prompt never ends the engine
            say({"error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # nothing to save; vLLM's exit handlers would tear down the groups ended above
