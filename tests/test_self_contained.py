"""The suite needs nothing beside the clone: no test reads a file outside the repository.

The one outside input is tiktoken's encodings (downloaded once, or found through
``TIKTOKEN_CACHE_DIR``); tests/conftest.py may point that variable at a folder beside
the checkout when there is one. Everything else a test reads is under the repository,
real third-party data included (tests/fixtures/real, with its sources and licenses).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What a path out of the repository looks like in a test's source.
OUTSIDE = r"parents\[[2-9]\]|\.\./|/work/shared|\"shared\"\s*/|/\s*\"shared\""


def test_no_test_builds_a_path_outside_the_repository() -> None:
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            outside = re.search(OUTSIDE, line)
            if outside and not (path.name == "conftest.py" and "tiktoken" in line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_the_real_data_is_here_with_its_attribution() -> None:
    real = ROOT / "tests" / "fixtures" / "real"
    readme = (real / "README.md").read_text()
    files = sorted(p.name for p in real.iterdir() if p.name != "README.md")
    assert len(files) == 5
    for name in files:
        assert f"`{name}`" in readme, name
    assert "Apache-2.0" in readme and "MIT" in readme
