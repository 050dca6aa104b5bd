"""``mpc-jupyter demo --serve-only``: prepares the consortium, serves its agents until SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from mpc_jupyter.client import Consortium


def test_serve_only_serves_until_sigterm(tmp_path: Path) -> None:
    folder = tmp_path / "consortium"
    argv = [sys.executable, "-m", "mpc_jupyter.cli", "demo", "--serve-only", "--patients", "300", "--dir", str(folder)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
            assert all(s.online for s in consortium.status())
            result = consortium.query("SELECT COUNT(*) AS n FROM patients")
            assert int(result["n"].iloc[0]) == 3 * 300
        finally:
            consortium.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "agents stopped (exit codes {'north': 0, 'central': 0, 'south': 0})" in out
        assert json.loads((folder / "demo.json").read_text())["complete"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
