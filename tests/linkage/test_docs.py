"""The Python examples of docs/linkage.md run and print what the page says."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "linkage.md"
PYTHON = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("code", PYTHON, ids=[f"example{i}" for i in range(len(PYTHON))])
def test_example_runs_and_prints_what_the_page_shows(code: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {})
    shown = [line.removeprefix("# ") for line in code.splitlines() if line.startswith("# {")]
    assert [ast.literal_eval(s) for s in shown] == [ast.literal_eval(s) for s in out.getvalue().splitlines()]
