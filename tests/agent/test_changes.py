"""Membership changes approved by t of n sites: the CLI that writes and signs them, the rule that
accepts them, and who may connect under the result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from site_agent.cli.agent import main as agent_main
from site_agent.cli.consortium import main
from site_agent.config import load_consortium
from site_agent.crypto.certs import fingerprint
from site_agent.crypto.signing import generate_signing_key, load_private_key
from site_agent.membership.changes import ChangeRejected, approve, check_change, digest
from site_agent.membership.identity import REVOKED, admission

SITES = ("site-a", "site-b", "site-c", "site-d")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (out + err).strip()


def _approve(capsys: pytest.CaptureFixture[str], directory: Path, change: Path, site: str) -> tuple[int, str]:
    code = agent_main(["approve", str(change), "--config", str(directory / "sites" / site / "agent.toml")])
    return code, capsys.readouterr().out.strip()


@pytest.fixture
def consortium(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Four sites (three compute, one input-only) and an analyst: t defaults to 3 (a majority)."""
    d = tmp_path / "c"
    assert _run(capsys, "init", str(d), "--name", "Lung Study", "--id", "lung-1")[0] == 0
    for i, site in enumerate(SITES):
        compute = ("--compute",) if i < 3 else ()
        assert _run(capsys, "add-site", str(d), site, "--address", f"127.0.0.1:{7001 + i}", *compute)[0] == 0
    assert _run(capsys, "add-analyst", str(d), "alice")[0] == 0
    return d


def _change(d: Path, pattern: str) -> Path:
    (found,) = d.glob(pattern)
    return found


def test_default_threshold_is_a_majority_and_init_sets_it(consortium: Path, tmp_path: Path, capsys) -> None:
    assert load_consortium(consortium / "consortium.toml").required_approvals == 3
    d = tmp_path / "two"
    assert _run(capsys, "init", str(d), "--name", "x", "--approvals", "2")[0] == 0
    assert load_consortium(d / "consortium.toml").required_approvals == 2


def test_revocation_takes_t_distinct_site_signatures(consortium: Path, capsys) -> None:
    current = load_consortium(consortium / "consortium.toml")
    code, out = _run(capsys, "revoke", str(consortium), "alice")
    assert code == 0 and "3 of the 4 sites" in out
    path = _change(consortium, "change-v1-revoke-alice.toml")
    change = load_consortium(path)
    assert "alice" not in change.analysts and change.version == 1 and change.previous == digest(current)
    with pytest.raises(ChangeRejected, match="0 valid site signatures"):
        check_change(current, change)

    assert _approve(capsys, consortium, path, "site-a")[0] == 0
    code, out = _approve(capsys, consortium, path, "site-a")  # the same site again
    assert code == 0 and "1 of 3 approvals" in out
    code, out = _approve(capsys, consortium, path, "site-d")
    assert code == 0 and "2 of 3 approvals" in out
    with pytest.raises(ChangeRejected, match="2 valid site signatures"):
        check_change(current, load_consortium(path))
    code, out = _run(capsys, "apply", str(consortium), str(path))
    assert code == 1 and "3 are required" in out
    assert load_consortium(consortium / "consortium.toml").version == 0  # nothing installed

    # One site's signature listed twice counts once.
    signed = load_consortium(path)
    twice = [("site-a", signed.signatures["site-a"])] * 2 + [("site-d", signed.signatures["site-d"])]
    with pytest.raises(ChangeRejected, match="2 valid"):
        check_change(current, signed, twice)

    assert _approve(capsys, consortium, path, "site-c")[0] == 0
    assert check_change(current, load_consortium(path)) == {"site-a", "site-c", "site-d"}
    code, out = _run(capsys, "apply", str(consortium), str(path))
    assert code == 0, out
    installed = load_consortium(consortium / "consortium.toml")
    assert installed.version == 1 and "alice" not in installed.analysts
    old_fp = current.analysts["alice"].tls_fingerprint
    assert installed.revoked[old_fp].name == "alice"
    reason = admission(installed, "alice", old_fp)
    assert reason is not None and reason.startswith(REVOKED)
    assert admission(installed, "site-b", installed.sites["site-b"].tls_fingerprint) is None


def test_signatures_that_do_not_count(consortium: Path, capsys) -> None:
    """Forged, unknown and newly added signers never make up the threshold."""
    current = load_consortium(consortium / "consortium.toml")
    assert _run(capsys, "propose", str(consortium), "add-analyst", "mallory")[0] == 0
    change = load_consortium(_change(consortium, "change-v1-add-mallory.toml"))
    assert "mallory" in change.analysts
    forged = approve(change, "site-a", generate_signing_key())  # a key that is not site-a's
    unknown = approve(forged, "site-z", generate_signing_key())
    # The analyst's own signing key, under the name of a site: still not that site's key.
    by_analyst = approve(unknown, "site-b", load_private_key(consortium / "analysts" / "alice" / "signing" / "key.pem"))
    real = approve(by_analyst, "site-c", load_private_key(consortium / "sites" / "site-c" / "signing" / "key.pem"))
    with pytest.raises(ChangeRejected, match="1 valid site signatures"):
        check_change(current, real)
    # Edited after signing: the signatures no longer cover the content.
    keys = {s: load_private_key(consortium / "sites" / s / "signing" / "key.pem") for s in SITES}
    signed = change
    for s in SITES[:3]:
        signed = approve(signed, s, keys[s])
    assert check_change(current, signed) == set(SITES[:3])
    tampered = replace(signed, approvals=1)
    with pytest.raises(ChangeRejected, match="0 valid"):
        check_change(current, tampered)


def test_a_change_applies_only_to_the_version_it_follows(consortium: Path, capsys) -> None:
    current = load_consortium(consortium / "consortium.toml")
    keys = {s: load_private_key(consortium / "sites" / s / "signing" / "key.pem") for s in SITES}
    assert _run(capsys, "propose", str(consortium), "approvals", "2")[0] == 0
    first = load_consortium(_change(consortium, "change-v1-approvals.toml"))
    for s in SITES[:3]:
        first = approve(first, s, keys[s])
    assert check_change(current, first)
    # Replayed onto the version it created (or any other), the same signed change is refused.
    with pytest.raises(ChangeRejected, match="does not follow"):
        check_change(first, first)
    # A consortium file edited by hand (the CA holder adding an analyst) is not a change at all.
    edited = replace(current, analysts={**current.analysts, "eve": current.analysts["alice"]})
    with pytest.raises(ChangeRejected):
        check_change(current, edited)


def test_setup_commands_refuse_a_live_consortium(consortium: Path, capsys) -> None:
    assert _run(capsys, "propose", str(consortium), "approvals", "2")[0] == 0
    path = _change(consortium, "change-v1-approvals.toml")
    for s in SITES[:3]:
        assert _approve(capsys, consortium, path, s)[0] == 0
    assert _run(capsys, "apply", str(consortium), str(path))[0] == 0
    code, out = _run(capsys, "add-analyst", str(consortium), "eve")
    assert code == 1 and "propose" in out
    # approve refuses a change that does not follow the version the site runs (v1 is installed now).
    code, out = _approve(capsys, consortium, path, "site-a")
    assert code == 1 and "does not follow version 1" in out


def test_rotate_an_analyst_and_a_site(consortium: Path, capsys) -> None:
    current = load_consortium(consortium / "consortium.toml")
    folder = consortium / "analysts" / "alice"
    old_fp = fingerprint((folder / "tls" / "cert.pem").read_bytes())
    assert _run(capsys, "rotate", str(consortium), "alice")[0] == 0
    change = load_consortium(_change(consortium, "change-v1-rotate-alice.toml"))
    new_fp = fingerprint((folder / "tls" / "cert.pem").read_bytes())
    assert new_fp != old_fp and fingerprint((folder / "tls" / "cert.old.pem").read_bytes()) == old_fp
    assert change.analysts["alice"].tls_fingerprint == new_fp
    assert change.analysts["alice"].signing_key != current.analysts["alice"].signing_key
    assert change.revoked[old_fp].reason == "rotated"
    assert admission(change, "alice", new_fp) is None
    assert (admission(change, "alice", old_fp) or "").startswith(REVOKED)

    site_dir = consortium / "sites" / "site-b"
    signing_before = (site_dir / "signing" / "key.pem").read_bytes()
    assert _run(capsys, "rotate", str(consortium), "site-b")[0] == 0
    site_change = load_consortium(_change(consortium, "change-v1-rotate-site-b.toml"))
    assert site_change.sites["site-b"].tls_fingerprint == fingerprint((site_dir / "tls" / "cert.pem").read_bytes())
    # A site keeps its signing key: it verifies the site's whole audit log.
    assert (site_dir / "signing" / "key.pem").read_bytes() == signing_before


def test_identity_refusals_name_the_reason(consortium: Path) -> None:
    cfg = load_consortium(consortium / "consortium.toml")
    alice = cfg.analysts["alice"].tls_fingerprint
    assert admission(cfg, "alice", alice) is None
    assert "not a member" in (admission(cfg, "eve", alice) or "")
    assert "not the one registered" in (admission(cfg, "alice", "0" * 64) or "")
