"""The boundaries docs/architecture.md describes, checked on the source: each service imports only the
shared package (memo) and itself, and every HTTP client of the inference service is memo/client.py's."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("collector", "inference", "prefetcher")
CLIENT = REPO / "memo" / "client.py"


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py") if ".venv" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_no_service_imports_another() -> None:
    bad = [f"{p.relative_to(REPO)} imports {other}" for service in SERVICES
           for p in _sources(service) for other in _imports(p) & set(SERVICES) - {service}]
    assert not bad, bad


def test_the_shared_package_imports_no_service() -> None:
    bad = [f"{p.relative_to(REPO)} imports {s}" for p in _sources("memo")
           for s in _imports(p) & set(SERVICES)]
    assert not bad, bad


def test_only_memo_client_builds_a_unix_socket_transport() -> None:
    """httpx over a Unix socket is built in one place; everyone else asks memo.client for it."""
    bad = []
    for p in _sources("memo", *SERVICES, "bench", "tests"):
        if p in (CLIENT, Path(__file__).resolve()):
            continue
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.keyword) and node.arg == "uds":
                bad.append(f"{p.relative_to(REPO)}:{node.value.lineno}")
    assert not bad, f"Unix-socket transports outside memo/client.py: {bad}"
