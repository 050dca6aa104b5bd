"""Issue 3, happy path: pooled answers from three real agents equal pandas on the pooled data.

Also: every receipt verifies against its site's key and matches the site's audit log, each
query adds exactly one accepted entry per site, ``mpc-site-agent audit verify`` passes on the
live log and names the line of a one-byte edit in a copy, and ``mpc-site-agent check`` passes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from site_agent.audit import Receipt, verify_receipt
from site_agent.errors import BadSignature

from .conftest import SITES, Running


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``mpc-site-agent ARGS`` as a subprocess (the installed console script when there is one)."""
    script = Path(sys.executable).parent / "mpc-site-agent"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "site_agent.cli.agent"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=False)


def by(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame.set_index(key).sort_index()


def test_count_avg_stddev_by_group_equal_pandas(lung: Running, pooled: pd.DataFrame) -> None:
    out = lung.client.query(
        "SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age, STDDEV(age) AS sd_age, "
        "AVG(ph_karno) AS mean_karno, STDDEV(time) AS sd_time FROM lung GROUP BY sex"
    )
    got, ref = by(out, "sex"), pooled.groupby("sex")
    assert got.index.tolist() == [1, 2]
    assert got["n"].tolist() == ref.size().tolist()
    np.testing.assert_allclose(got["mean_age"], ref.age.mean(), rtol=1e-6)
    np.testing.assert_allclose(got["sd_age"], ref.age.std(), rtol=1e-6)
    np.testing.assert_allclose(got["mean_karno"], ref.ph_karno.mean(), rtol=1e-6)  # NULLs skipped, as pandas
    np.testing.assert_allclose(got["sd_time"], ref.time.std(), rtol=1e-6)


def test_count_without_group_by(lung: Running, pooled: pd.DataFrame) -> None:
    out = lung.client.query("SELECT COUNT(*) AS n, COUNT(wt_loss) AS with_wt FROM lung")
    assert out["n"].tolist() == [len(pooled)]
    assert out["with_wt"].tolist() == [int(pooled.wt_loss.notna().sum())]


def test_proportions_and_wilson_limits_equal_statsmodels(lung: Running, pooled: pd.DataFrame) -> None:
    out = lung.client.query(
        "SELECT status, PROPORTION(sex = 2) AS female, AVG(age >= 65) AS older FROM lung GROUP BY status"
    )
    got = by(out, "status")
    for status, grp in pooled.groupby("status"):
        x, n = int((grp.sex == 2).sum()), len(grp)
        lo, hi = proportion_confint(x, n, alpha=0.05, method="wilson")
        assert got.loc[status, "female"] == pytest.approx(x / n, rel=1e-6)
        assert got.loc[status, "female_ci_low"] == pytest.approx(lo, abs=1e-6)
        assert got.loc[status, "female_ci_high"] == pytest.approx(hi, abs=1e-6)
        assert got.loc[status, "older"] == pytest.approx((grp.age >= 65).mean(), rel=1e-6)


def test_receipts_verify_and_match_one_accepted_audit_entry_per_site(lung: Running) -> None:
    before = lung.audit_counts()
    query = "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex"
    out = lung.client.query(query)
    consortium = lung.consortium
    receipts = [Receipt.from_json(r) for r in out.attrs["receipts"]]
    assert sorted(r.site for r in receipts) == sorted(SITES)
    for receipt in receipts:
        verify_receipt(receipt, consortium.site(receipt.site).public_key())
        other = next(s for s in SITES if s != receipt.site)
        with pytest.raises(BadSignature):
            verify_receipt(receipt, consortium.site(other).public_key())
        new = lung.audit(receipt.site)[before[receipt.site] :]
        assert len(new) == 1, f"{receipt.site}: {len(new)} audit entries for one query"
        entry = new[0]
        assert (entry["decision"], entry["query"], entry["analyst"]) == ("accepted", query, "analyst")
        assert (entry["seq"], entry["hash"], entry["signature"]) == (receipt.seq, receipt.hash, receipt.signature)
        assert entry["plan_digest"] == out.attrs["plan_digest"]
        assert [r["name"] for r in entry["reveals"]] and all("value" not in r for r in entry["reveals"])


def test_logs_and_audit_entries_never_hold_values(lung: Running, pooled: pd.DataFrame) -> None:
    lung.client.query("SELECT sex, AVG(wt_loss) AS w FROM lung GROUP BY sex")
    secrets = [f"{v:.6f}"[:7] for v in pooled.groupby("sex").wt_loss.mean()]
    for site in SITES:
        texts = (lung.audit_path(site).read_text(), (lung.procs.log_dir / f"{site}.log").read_text())
        for text in texts:
            assert not any(s in text for s in secrets), f"{site}: a released value appears in a log"


def test_audit_verify_passes_and_names_an_edited_line(lung: Running, tmp_path: Path) -> None:
    lung.client.query("SELECT COUNT(*) AS n FROM lung")
    for site in SITES:
        done = agent_cli("audit", "verify", "--config", str(lung.agent_toml(site)))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "OK" in done.stdout
    # A copy of north's log with one byte changed on line 2, checked through a copy of its config.
    site_dir = lung.agent_toml("north").parent
    log = lung.audit_path("north").read_bytes()
    lines = log.splitlines(keepends=True)
    assert len(lines) >= 2
    at = sum(len(x) for x in lines[:1]) + lines[1].index(b'"analyst":"') + len('"analyst":"')
    edited = log[:at] + bytes([log[at] ^ 0x01]) + log[at + 1 :]
    copy = tmp_path / "audit-copy.jsonl"
    copy.write_bytes(edited)
    config = site_dir / "agent-audit-copy.toml"
    text = lung.agent_toml("north").read_text()
    config.write_text(text.replace('path = "audit/audit.jsonl"', f'path = "{copy}"'))
    try:
        done = agent_cli("audit", "verify", "--config", str(config))
    finally:
        config.unlink()
    assert done.returncode == 1, done.stdout
    assert "line 2" in done.stdout, done.stdout
    assert agent_cli("audit", "verify", "--config", str(lung.agent_toml("north"))).returncode == 0


def test_check_passes_for_every_site(lung: Running) -> None:
    for site in SITES:
        done = agent_cli("check", "--config", str(lung.agent_toml(site)))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "FAIL" not in done.stdout


def test_an_explain_request_is_audited_and_reveals_nothing(lung: Running) -> None:
    before = lung.audit_counts()
    text = lung.client.explain("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    assert "Reveal points" in text
    for site in SITES:
        new = lung.wait_audit(site, before[site])
        assert [(e["decision"], e["reveals"]) for e in new] == [("accepted", [])], (site, new)
        assert new[0]["reason"].startswith("explain") and new[0]["plan_digest"]
