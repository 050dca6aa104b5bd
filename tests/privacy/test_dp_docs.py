"""Every Python example in docs/privacy-dp.md runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "privacy-dp.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_python_example_runs() -> None:
    assert len(BLOCKS) >= 4
    namespace: dict[str, Any] = {}
    for i, code in enumerate(BLOCKS):
        exec(compile(code, f"{DOC}:block{i}", "exec"), namespace)
