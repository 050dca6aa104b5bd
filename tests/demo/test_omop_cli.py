"""``mpc-jupyter demo --omop --serve-only``: three OMOP CDM sites served by real agents."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from mpc_jupyter.client import Consortium


def test_omop_demo_serves_omop_tables(tmp_path: Path) -> None:
    folder = tmp_path / "omop"
    argv = [sys.executable, "-m", "mpc_jupyter.cli", "demo", "--omop", "--serve-only", "--patients", "300"]
    proc = subprocess.Popen([*argv, "--dir", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        path = None
        deadline = time.monotonic() + 90
        while path is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the demo exited before serving"
            if line.startswith("MPC_CONSORTIUM="):
                path = Path(line.strip().split("=", 1)[1])
        assert path == folder.resolve() / "consortium.toml"
        consortium = Consortium.connect(path, analyst="analyst")
        try:
            result = consortium.query("SELECT gender_concept_id, COUNT(*) AS n FROM person GROUP BY gender_concept_id")
            assert result["n"].astype(int).sum() == 3 * 300
            assert sorted(result["gender_concept_id"].astype(int)) == [8507, 8532]
        finally:
            consortium.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert json.loads((folder / "demo.json").read_text())["omop"] is True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
