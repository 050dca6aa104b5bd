"""Every failure reaches the analyst as one UsageError naming what to fix."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from mpc_jupyter.magic import MpcMagic

from .conftest import SITES, Lung, start_lung


def failure(ip: InteractiveShell, cell: str, line: str = "") -> str:
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("mpc", line, cell)
    return str(info.value)


def test_not_connected(ip: InteractiveShell) -> None:
    magic = MpcMagic(shell=ip)
    with pytest.raises(UsageError, match=r"not connected: run %mpc connect"):
        magic.mpc("", "SELECT COUNT(*) AS n FROM lung")


def test_bad_consortium_file(ip: InteractiveShell, tmp_path: Path) -> None:
    magic = MpcMagic(shell=ip)
    with pytest.raises(UsageError, match="mpc: configuration"):
        magic.mpc(f"connect {tmp_path / 'missing.toml'}")


def test_syntax_error_has_line_column_and_caret(ip: InteractiveShell) -> None:
    message = failure(ip, "SELECT sex, COUNT(*) AS n FROM lung\nGROUP BY sex HAVING")
    first, source, caret = message.splitlines()
    assert first.startswith("mpc: site ") and "syntax error" in first and "(line 2, column 14)" in first
    assert source == "GROUP BY sex HAVING"
    assert caret == " " * 13 + "^"


def test_unknown_column_and_table_suggest_names(ip: InteractiveShell) -> None:
    assert "unknown column 'sexx'; did you mean 'sex'?" in failure(
        ip, "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sexx"
    )
    assert "did you mean 'lung'?" in failure(ip, "SELECT COUNT(*) AS n FROM lungs")


def test_policy_refusal_names_site_and_rule(ip: InteractiveShell) -> None:
    message = failure(ip, "SELECT MIN(age) AS youngest FROM lung")
    assert message.startswith("mpc: refused by site ")
    assert "rule allow_min_max" in message
    assert message.count("\n") == 0


def test_unbound_parameter(ip: InteractiveShell) -> None:
    assert "'nowhere' is not defined" in failure(ip, "SELECT COUNT(*) AS n FROM lung WHERE age > {nowhere}")


def test_unknown_option(ip: InteractiveShell) -> None:
    assert "unrecognized arguments: --outt" in failure(ip, "SELECT COUNT(*) AS n FROM lung", "--outt x")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, ip: InteractiveShell) -> Iterator[tuple[Lung, MpcMagic]]:
    """A second consortium whose agents these tests stop and kill, with its own magics."""
    lung = start_lung(tmp_path_factory.mktemp("faulty"))
    magic = MpcMagic(shell=ip)
    magic.mpc(f"connect {lung.path}")
    yield lung, magic
    magic.mpc("close")
    lung.agents.stop()


def test_a_silent_site_is_a_timeout(faulty: tuple[Lung, MpcMagic]) -> None:
    lung, magic = faulty
    magic.timeout = 1.0
    pid = lung.agents.procs[SITES[2]].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(UsageError) as info:
            magic.mpc("", "SELECT COUNT(*) AS n FROM lung")
    finally:
        os.kill(pid, signal.SIGCONT)
        magic.timeout = 30.0
    message = str(info.value)
    assert message.startswith(f"mpc: timeout: site {SITES[2]} went silent")
    assert "MpcMagic.timeout" in message


def test_a_site_down_is_named(faulty: tuple[Lung, MpcMagic]) -> None:
    lung, magic = faulty
    lung.agents.kill(SITES[1])
    with pytest.raises(UsageError) as info:
        magic.mpc("", "SELECT COUNT(*) AS n FROM lung")
    message = str(info.value)
    assert f"site {SITES[1]}" in message and ("down" in message or "left the computation" in message)
    status = magic.mpc("status")
    assert not status.loc[SITES[1], "online"] and status.loc[SITES[0], "online"]


def test_connect_without_a_path_uses_the_environment(
    ip: InteractiveShell, lung: Lung, monkeypatch: pytest.MonkeyPatch
) -> None:
    magic = MpcMagic(shell=ip)
    monkeypatch.delenv("MPC_CONSORTIUM", raising=False)
    with pytest.raises(UsageError, match=r"no consortium file given and \$MPC_CONSORTIUM is not set"):
        magic.mpc("connect")
    monkeypatch.setenv("MPC_CONSORTIUM", str(lung.path))
    magic.mpc("connect")
    assert magic.manager.consortium.config.path == Path(lung.path).resolve()
    magic.manager.close()
