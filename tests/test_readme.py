"""The README's claims that a command can show: its `clr` example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_clr_example_runs_as_written(capsys):
    (block,) = python_blocks()
    exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert "triangular2" in printed
    assert re.search(r"by the (accuracy|loss|max_lr/4) rule", printed)
