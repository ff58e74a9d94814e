"""The offline demo (``make demo``) runs and shows what it claims."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from convotree import demo


def test_demo_builds_branches_and_reuses_one_summary(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert demo.main([str(tmp_path / "demo.db")]) == 0
    text = out.getvalue()
    assert (tmp_path / "demo.db").is_file()
    assert text.count("<- current") == 1
    assert "summary: made now; summarizer calls: 1" in text
    assert "summary: reused; summarizer calls: 0" in text
    assert "Make it three days." in text and "Make it five days." in text
