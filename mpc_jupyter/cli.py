"""``mpc-jupyter``: the analyst side's command line. ``mpc-jupyter demo`` runs the demo.

``mpc-jupyter demo`` creates (or reuses) a local consortium of three synthetic hospitals,
starts their three site agents as background processes, and opens JupyterLab on ``examples/``,
whose notebooks connect through ``$MPC_CONSORTIUM`` (set to the demo's consortium file). Ctrl-C or SIGTERM stops
JupyterLab and the agents. ``--headless`` runs ``examples/quickstart.ipynb`` with nbclient instead, prints what
its cells show, and stops the agents. ``--serve-only`` starts no notebook at all: it prints
``MPC_CONSORTIUM=<consortium.toml>`` and serves until Ctrl-C or SIGTERM (the browser tests use it).
``--omop`` builds three OMOP CDM v5.4 sites instead (``mpc_jupyter.demo.omop``, in ``omop-consortium/``)
and starts with ``examples/omop-incidence.ipynb``.
See docs/demo.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from site_agent.errors import MpcError

from .client import CONSORTIUM_ENV
from .demo.consortium import AgentProcesses
from .demo.data import DEFAULT_PATIENTS, DEFAULT_SEED
from .demo.local import CONSORTIUM_FOLDER, OMOP_FOLDER, DemoConsortium, DemoSettings, prepare_demo
from .demo.omop import OMOP_PERSONS

PROG = "mpc-jupyter"


class _Stop(Exception):
    """Raised in the main thread by SIGTERM so that the agents are stopped on the way out."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def default_examples() -> Path:
    """``./examples`` if it exists, else the examples folder of this source checkout."""
    here = Path.cwd() / "examples"
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "examples"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="mpc-jupyter: analytics across hospitals under MPC")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run three synthetic hospitals locally and open the example notebooks")
    demo.add_argument(
        "--dir", type=Path, default=None, help=f"consortium folder (default: {CONSORTIUM_FOLDER} beside examples/)"
    )
    demo.add_argument(
        "--patients",
        type=int,
        default=None,
        help=f"patients per hospital ({DEFAULT_PATIENTS}; {OMOP_PERSONS} with --omop)",
    )
    demo.add_argument(
        "--omop", action="store_true", help=f"OMOP CDM v5.4 tables instead (folder {OMOP_FOLDER}, omop-incidence.ipynb)"
    )
    demo.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"data seed ({DEFAULT_SEED})")
    demo.add_argument("--fresh", action="store_true", help="delete and recreate the consortium folder")
    demo.add_argument("--headless", action="store_true", help="run the first example notebook and print its tables")
    demo.add_argument("--examples", type=Path, default=None, help="notebook folder (./examples)")
    demo.add_argument("--no-browser", action="store_true", help="start JupyterLab without opening a browser")
    demo.add_argument(
        "--serve-only", action="store_true", help="only prepare the consortium and serve its agents until stopped"
    )
    return parser


def _first_notebook(omop: bool) -> str:
    """The notebook the demo starts with: the quickstart, or the OMOP incidence example."""
    return "omop-incidence.ipynb" if omop else "quickstart.ipynb"


def _headless(demo: DemoConsortium, examples: Path) -> None:
    from .demo.notebooks import run_notebook, text_outputs  # nbclient comes with the "lab" extra

    notebook = examples / _first_notebook(demo.settings.omop)
    _say(f"running {notebook} headless")
    started = time.monotonic()
    executed = run_notebook(notebook)
    for number, text in text_outputs(executed):
        print(f"--- cell {number}\n{text}", flush=True)
    _say(f"notebook ran in {time.monotonic() - started:.1f} s")


def _lab(examples: Path, no_browser: bool) -> None:
    argv = [sys.executable, "-m", "jupyterlab", "--notebook-dir", str(examples)]
    if no_browser:
        argv.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # containers often run as root; Jupyter refuses it otherwise
    # Its own session: Ctrl-C reaches this process only, which then stops JupyterLab without its prompt.
    lab = subprocess.Popen(argv, start_new_session=True)
    try:
        if lab.wait():
            _say(f"JupyterLab exited with status {lab.returncode}")
    finally:
        if lab.poll() is None:
            lab.terminate()
            try:
                lab.wait(15)
            except subprocess.TimeoutExpired:
                lab.kill()
                lab.wait()


def _serve() -> None:
    """Wait for Ctrl-C or SIGTERM while the agents serve."""
    while True:
        time.sleep(3600)


def demo(args: argparse.Namespace) -> int:
    """Prepare the consortium, start the agents, then JupyterLab, the headless quickstart or nothing."""
    if args.patients is None:
        args.patients = OMOP_PERSONS if args.omop else DEFAULT_PATIENTS
    if args.patients < 100:
        raise MpcError("--patients must be at least 100")
    if args.serve_only and args.headless:
        raise MpcError("--serve-only and --headless exclude each other")
    examples = (args.examples or default_examples()).resolve()
    if not args.serve_only and not (examples / _first_notebook(args.omop)).exists():
        raise MpcError(f"no example notebooks in {examples} (use --examples)")
    folder = args.dir or examples.parent / (OMOP_FOLDER if args.omop else CONSORTIUM_FOLDER)
    started = time.monotonic()
    settings = DemoSettings(args.patients, args.seed, omop=args.omop)
    consortium = prepare_demo(folder, settings, fresh=args.fresh, say=_say)
    _say(f"consortium ready in {time.monotonic() - started:.1f} s: {consortium.path}")
    os.environ[CONSORTIUM_ENV] = str(consortium.path)  # JupyterLab's kernels and nbclient inherit it
    agents = AgentProcesses(consortium.folder, consortium.settings.sites)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        step = time.monotonic()
        agents.start()
        _say(f"agents {', '.join(agents.sites)} serving (started in {time.monotonic() - step:.1f} s)")
        if args.serve_only:
            print(f"{CONSORTIUM_ENV}={consortium.path}", flush=True)
            _say("serving until Ctrl-C or SIGTERM")
            _serve()
        elif args.headless:
            _headless(consortium, examples)
        else:
            _say(f"opening JupyterLab on {examples}; Ctrl-C stops the demo")
            _lab(examples, args.no_browser)
    except (KeyboardInterrupt, _Stop):
        _say("stopping")
    finally:
        codes = agents.stop()
        signal.signal(signal.SIGTERM, previous)
        _say(f"agents stopped (exit codes {codes}); total {time.monotonic() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mpc-jupyter`` console script."""
    args = _parser().parse_args(argv)
    try:
        return demo(args)
    except (MpcError, RuntimeError, TimeoutError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
