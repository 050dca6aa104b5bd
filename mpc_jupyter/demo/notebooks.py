"""Run an example notebook headless (nbclient) and print what its cells show as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient


def run_notebook(path: Path, timeout: float = 600.0) -> Any:
    """Execute the notebook at ``path`` in its own folder; the executed notebook."""
    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(
        nb,
        timeout=int(timeout),
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def text_outputs(nb: Any) -> Iterator[tuple[int, str]]:
    """(cell number, text) of each printed stream and text/plain result, in order (no images or widgets)."""
    for number, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                yield number, out.text.rstrip("\n")
            elif out.output_type in ("execute_result", "display_data"):
                data = out.get("data", {})
                if "application/vnd.jupyter.widget-view+json" in data or "image/png" in data:
                    continue
                if "text/plain" in data:
                    yield number, data["text/plain"]
