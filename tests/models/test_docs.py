"""Every ``python`` block of docs/models.md runs, in order, in one namespace; the printed
summary shown there is what the first example prints."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", DOC.read_text(), flags=re.S)


def test_examples_run_and_print_what_the_page_shows() -> None:
    namespace: dict[str, object] = {}
    printed = []
    sklearn = importlib.util.find_spec("sklearn") is not None  # a test dependency; TREES' example uses it
    for lang, body in BLOCKS:
        if lang != "python" or ("sklearn" in body and not sklearn):
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, str(DOC), "exec"), namespace)
        printed.append(out.getvalue())
    shown = next(body for lang, body in BLOCKS if lang == "" and body.lstrip().startswith("coef"))
    assert shown.strip() == printed[1].strip().split("\n{")[0].strip()
