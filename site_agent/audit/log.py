"""The append-only, hash-chained, signed audit log of one site (one JSONL line per request).

Durability: each entry is written with a single ``write`` on an ``O_APPEND`` descriptor, then
``fsync``-ed before the receipt is returned, so a receipt the analyst holds always refers to an
entry on disk. A failed write is rolled back to the previous end of file. One process at a time
may append (an exclusive ``flock``), so two agents pointed at the same file fail loudly instead
of forking the chain.

On open, the last entry is checked (complete line, hash, signature) to continue the chain. A
damaged tail, e.g. a line cut short by a crash, raises ``AuditError``: the log is evidence, so
a person decides what to do (``audit verify`` names the line), never the agent on its own.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from site_agent.audit.entry import GENESIS, Decision, Receipt, Reveal, entry_hash, make_body, sign_hash
from site_agent.crypto.envelope import canonical_json
from site_agent.crypto.signing import Ed25519PrivateKey
from site_agent.errors import AuditError

_TAIL_CHUNK = 64 * 1024


def utc_now() -> dt.datetime:
    """The current UTC time (the default clock of ``AuditLog``)."""
    return dt.datetime.now(dt.UTC)


def format_time(when: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-05-09T07:35:25.123456Z``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _last_line(fd: int, size: int) -> bytes:
    """The last line of a file that ends with a newline, without that newline."""
    buf = b""
    pos = size - 1
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
        cut = buf.rfind(b"\n")
        if cut >= 0:
            return buf[cut + 1 :]
    return buf


def _count_lines(fd: int, size: int) -> int:
    count, pos = 0, 0
    while pos < size:
        chunk = os.pread(fd, min(_TAIL_CHUNK, size - pos), pos)
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count


class AuditLog:
    """Appends signed, chained entries to the JSONL file at ``path`` for site ``site``."""

    def __init__(
        self,
        path: Path,
        site: str,
        key: Ed25519PrivateKey,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.path = Path(path)
        self.site = site
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            raise AuditError(f"{self.path}: audit log is in use by another process") from exc
        if created:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        try:
            self._seq, self._prev = self._read_tail()
        except AuditError:
            self.close()
            raise

    def _read_tail(self) -> tuple[int, str]:
        """Next sequence number and the hash to chain to, from the last entry on disk."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0, GENESIS
        if os.pread(self._fd, 1, size - 1) != b"\n":
            line_no = _count_lines(self._fd, size) + 1
            raise AuditError(
                f"{self.path}: line {line_no}: last entry is incomplete (cut short by a crash?); "
                "run 'audit verify' and move the damaged log aside before appending"
            )
        line = _last_line(self._fd, size)
        try:
            entry = json.loads(line)
            seq, digest = entry["seq"], entry["hash"]
        except (ValueError, TypeError, KeyError) as exc:
            raise AuditError(f"{self.path}: last entry is not a valid audit entry; run 'audit verify'") from exc
        if not isinstance(seq, int) or digest != entry_hash(entry):
            raise AuditError(f"{self.path}: last entry does not match its hash; run 'audit verify'")
        return seq + 1, digest

    def append(
        self,
        *,
        analyst: str,
        query: str,
        plan_digest: str | None,
        policy_digest: str,
        decision: Decision,
        reason: str = "",
        reveals: Sequence[Reveal] = (),
        peers: Sequence[str] = (),
        timings: Mapping[str, float] | None = None,
        privacy: Mapping[str, float | str] | None = None,
        kind: str | None = None,
        rule: str | None = None,
        review: Mapping[str, Any] | None = None,
    ) -> Receipt:
        """Write one entry durably and return its receipt for the analyst.

        ``plan_digest`` is ``None`` when the request was refused before a plan existed;
        ``privacy`` (DP queries only) the epsilon spent and the analyst's budget at this site;
        ``kind`` is the compiled plan's statement kind and ``rule`` the policy key that refused,
        if any; ``review`` marks a step of output review (``site_agent.audit.entry``).
        """
        with self._lock:
            if self._fd < 0:
                raise AuditError(f"{self.path}: audit log is closed")
            body: dict[str, Any] = make_body(
                seq=self._seq,
                time=format_time(self._clock()),
                site=self.site,
                analyst=analyst,
                query=query,
                plan_digest=plan_digest,
                policy_digest=policy_digest,
                decision=decision,
                reason=reason,
                reveals=reveals,
                peers=peers,
                timings=timings or {},
                prev=self._prev,
                privacy=privacy,
                kind=kind,
                rule=rule,
                review=review,
            )
            digest = entry_hash(body)
            signature = sign_hash(self._key, digest)
            line = canonical_json({**body, "hash": digest, "signature": signature}) + b"\n"
            self._write(line)
            receipt = Receipt(site=self.site, seq=self._seq, hash=digest, signature=signature)
            self._seq += 1
            self._prev = digest
            return receipt

    def _write(self, line: bytes) -> None:
        """Append ``line`` and fsync; on failure cut the file back so no partial line remains."""
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, size)
                os.fsync(self._fd)
            except OSError:
                pass  # the damaged tail will be reported on the next open
            raise AuditError(f"{self.path}: cannot write audit entry: {exc.strerror or exc}") from exc

    @property
    def next_seq(self) -> int:
        """The sequence number the next entry will get."""
        return self._seq

    def close(self) -> None:
        """Release the file (and its lock); further appends raise ``AuditError``."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
