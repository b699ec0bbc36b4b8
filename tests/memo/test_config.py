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


def test_deploy_file_documents_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/memo.toml is `memo config --toml`: it parses, and it names and explains every key."""
    import tomllib

    path = Path(__file__).resolve().parents[2] / "deploy" / "memo.toml"
    monkeypatch.setenv("MEMO_CONFIG", str(path))
    cfg = config.load()
    doc = tomllib.loads(path.read_text())
    for section, field in config.Config.model_fields.items():
        value = getattr(cfg, section)
        if isinstance(value, config.BaseModel):
            for key, sub in type(value).model_fields.items():
                assert key in doc[section], f"deploy/memo.toml lacks [{section}] {key}"
                assert sub.description, f"{section}.{key} has no description"
        else:
            assert section in doc and field.description
