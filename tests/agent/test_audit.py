"""Audit log: the chain verifies, every one-byte edit is caught at the right entry, damage is reported."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from site_agent.audit import AuditLog, Receipt, Reveal, verify, verify_receipt
from site_agent.errors import AuditError, BadSignature

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
N = 6


def _clock() -> dt.datetime:
    return dt.datetime(2026, 5, 9, 7, 35, 25, tzinfo=dt.UTC)


def _fill(path: Path, n: int = N) -> list[Receipt]:
    receipts = []
    with AuditLog(path, "site-a", KEY, clock=_clock) as log:
        for i in range(n):
            receipts.append(
                log.append(
                    analyst="alice",
                    query=f"SELECT count(*) FROM lung WHERE age > {i} -- é",
                    plan_digest="ab" * 32 if i % 2 == 0 else None,
                    policy_digest="cd" * 32,
                    decision="accepted" if i % 2 == 0 else "refused",
                    reason="" if i % 2 == 0 else "site 'site-b' refused (min_cell_size)",
                    reveals=[Reveal("count", (3,))],
                    peers=["site-b", "site-c"],
                    timings={"local": 0.01, "mpc": 0.25},
                )
            )
    return receipts


def test_chain_verifies_and_receipts_match(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    receipts = _fill(path)
    result = verify(path, PUB, site="site-a")
    assert result.ok, str(result)
    assert result.entries == N
    lines = path.read_bytes().splitlines()
    assert len(lines) == N
    entries = [json.loads(line) for line in lines]
    # Independent recomputation of the chain from the file's own bytes.
    prev = "0" * 64
    for entry, receipt in zip(entries, receipts, strict=True):
        assert entry["prev"] == prev
        body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        assert entry["hash"] == digest == receipt.hash
        assert entry["query_digest"] == hashlib.sha256(entry["query"].encode()).hexdigest()
        assert entry["reveals"] == [{"name": "count", "shape": [3]}]
        verify_receipt(receipt, PUB)
        prev = digest
    assert result.last_hash == prev
    assert [e["seq"] for e in entries] == list(range(N))
    assert entries[1]["plan_digest"] is None and entries[1]["decision"] == "refused"


def test_reopen_continues_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 2)
    with AuditLog(path, "site-a", KEY) as log:
        assert log.next_seq == 2
        log.append(analyst="bob", query="q", plan_digest=None, policy_digest="0" * 64, decision="failed")
    result = verify(path, PUB)
    assert result.ok and result.entries == 3


def test_receipt_from_other_key_refused(tmp_path: Path) -> None:
    receipt = _fill(tmp_path / "a.jsonl", 1)[0]
    with pytest.raises(BadSignature):
        verify_receipt(receipt, Ed25519PrivateKey.generate().public_key())
    assert Receipt.from_json(receipt.to_json()) == receipt


def test_wrong_public_key_names_first_entry(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _fill(path)
    result = verify(path, Ed25519PrivateKey.generate().public_key())
    assert (result.ok, result.bad_line, result.entries) == (False, 1, 0)
    assert "signature" in result.reason


def test_one_byte_edits_detected_at_the_right_entry(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _fill(path)
    original = path.read_bytes()
    # Line number (1-based) of every byte; a newline belongs to the line it ends.
    line_of = [1 + n for n in itertools.accumulate(original, lambda acc, byte: acc + (byte == 10), initial=0)][:-1]
    rng = random.Random(20260509)
    positions = [*rng.sample(range(len(original)), 150), 0, len(original) - 1]
    for pos in positions:
        for new in {original[pos] ^ 1, ord("0") if original[pos] != ord("0") else ord("1")}:
            edited = bytearray(original)
            edited[pos] = new
            path.write_bytes(bytes(edited))
            result = verify(path, PUB)
            assert not result.ok, f"edit at byte {pos} not detected"
            # Caught on the edited line, or (when the edit only joins lines / is a newline) no later than the next.
            assert result.bad_line in (line_of[pos], line_of[pos] + 1), (pos, result)
            if original[pos] != ord("\n"):
                assert result.bad_line == line_of[pos], (pos, result)


def test_deleted_and_reordered_entries_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _fill(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert verify(path, PUB).bad_line == 3
    path.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    assert verify(path, PUB).bad_line == 1


def test_truncated_last_line_reported_and_blocks_append(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _fill(path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    result = verify(path, PUB)
    assert (result.bad_line, result.entries) == (N, N - 1)
    assert "incomplete" in result.reason
    with pytest.raises(AuditError, match=f"line {N}: last entry is incomplete"):
        AuditLog(path, "site-a", KEY)


def test_tampered_tail_blocks_append(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _fill(path)
    path.write_bytes(path.read_bytes().replace(b"age > 5", b"age > 6"))
    with pytest.raises(AuditError, match="does not match its hash"):
        AuditLog(path, "site-a", KEY)


def test_second_writer_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditLog(path, "site-a", KEY), pytest.raises(AuditError, match="in use"):
        AuditLog(path, "site-a", KEY)


def test_values_cannot_be_logged_as_reveals(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.jsonl", "site-a", KEY) as log, pytest.raises(TypeError, match="never values"):
        log.append(
            analyst="a",
            query="q",
            plan_digest=None,
            policy_digest="0" * 64,
            decision="accepted",
            reveals=[{"name": "count", "value": 17}],  # type: ignore[list-item]
        )
    assert verify(tmp_path / "a.jsonl", PUB).entries == 0


def test_entries_are_durable_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, "site-a", KEY)
    log.append(analyst="a", query="q", plan_digest=None, policy_digest="0" * 64, decision="refused")
    # Visible to another reader before close: written through, not buffered in the process.
    assert verify(path, PUB).entries == 1
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(analyst="a", query="q", plan_digest=None, policy_digest="0" * 64, decision="refused")
