from pathlib import Path

import pytest
from pydantic import ValidationError

from memo import config


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMO_CONFIG", raising=False)
    cfg = config.load()
    assert cfg.collector.launch_window_s == 10.0
    assert cfg.inference.port == 8077


def test_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "memo.toml"
    toml.write_text("[collector]\nlaunch_window_s = 3.5\nflush_interval_s = 1.0\n")
    monkeypatch.setenv("MEMO_CONFIG", str(toml))
    monkeypatch.setenv("MEMO_COLLECTOR__FLUSH_INTERVAL_S", "0.5")
    cfg = config.load()
    assert cfg.collector.launch_window_s == 3.5
    assert cfg.collector.flush_interval_s == 0.5


def test_bad_values_say_which_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "memo.toml"
    toml.write_text("[collector]\nlaunch_window_s = -1\n")
    monkeypatch.setenv("MEMO_CONFIG", str(toml))
    with pytest.raises(ValidationError, match="launch_window_s"):
        config.load()


def test_missing_explicit_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMO_CONFIG", "/nonexistent/memo.toml")
    with pytest.raises(FileNotFoundError, match="MEMO_CONFIG"):
        config.load()
