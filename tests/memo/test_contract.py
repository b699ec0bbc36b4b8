"""The wire contract rejects what no service can store or act on (found by schemathesis as 500s)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from memo.contract import FeedbackItem

GOOD = {"app": "/usr/bin/vim", "uid": 1000, "action": "pagecache", "ts": 1_700_000_000.0,
        "bytes_prefetched": 4096, "bytes_used": 4096}


def test_a_plausible_feedback_item_passes() -> None:
    assert FeedbackItem.model_validate(GOOD).bytes_used == 4096


@pytest.mark.parametrize("bad", [
    {"uid": 7735526444614525952}, {"bytes_prefetched": 7735526444614525952}, {"ts": 3.4e38},
    {"ts": float("nan")}, {"ts": -1.0}, {"app": "\ud9e0\udfab"}, {"app": "vim\x00"}, {"app": ""},
])
def test_out_of_range_numbers_and_unstorable_names_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeedbackItem.model_validate({**GOOD, **bad})


def test_a_program_path_with_a_tab_is_a_legal_name() -> None:
    """Any user can run "/tmp/a\tb": the prefetcher's own feedback on it must validate."""
    assert FeedbackItem.model_validate({**GOOD, "app": "/tmp/a\tb"}).app == "/tmp/a\tb"
