"""Policy thresholds at their boundaries, against three real agents: redact_at_or_below at t and
t + 1, round_counts at the half-way points, min_sites at 1, 2 and 3 sites, the hourly rate limit
at limit - 1, limit and limit + 1 queries at every site, and the query timeout (a member silent
for far less than it does not fail the query; one silent until it fires does).

Two small consortia, started together once for the module: ``options`` (north redacts at or
below 6, central rounds to 5, south asks for 2 sites per cell; query timeout 8 s) on planted
groups of exactly the boundary sizes, and ``limited`` (every site admits 3 queries an hour).
Released counts are compared with pandas on the pooled rows, rounded half up to 5.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from mpc_jupyter.client import QueryFailed

from .conftest import SITES, Dataset, Running, start_retrying
from .test_faults import stopped

REDACT, BASE, MIN_SITES, LIMIT, TIMEOUT = 6, 5, 2, 3, 8
WITHHELD = f"<{REDACT + 1}"  # every release check uses max(k, t + 1) = 7

SCHEMA = """\
[tables.t]
id = { type = "integer", person = true }
g = { type = "integer", domain = [0, 1, 2, 3, 4, 5, 6, 7, 8] }
x = "float"
"""

# group -> persons at (north, central, south)
GROUPS = {
    1: (2, 2, 2),  # 6 = t: withheld
    2: (3, 2, 2),  # 7 = t + 1: released, 7 rounds to 5
    3: (3, 3, 2),  # 8: rounds to 10
    4: (4, 4, 4),  # 12: rounds to 10
    5: (5, 4, 4),  # 13: rounds to 15
    6: (10, 0, 0),  # one site: withheld by min_sites
    7: (5, 5, 0),  # two sites: released
    8: (4, 3, 3),  # three sites: released
}


def _by_site() -> dict[str, pd.DataFrame]:
    frames, next_id = {}, 1
    for s, site in enumerate(SITES):
        rows = []
        for g, per_site in GROUPS.items():
            for _ in range(per_site[s]):
                rows.append({"id": next_id, "g": g, "x": float(next_id % 7)})
                next_id += 1
        frames[site] = pd.DataFrame(rows)
    return frames


PLANTED = Dataset("t", SCHEMA, _by_site)
POLICIES = {
    "north": {"extra_policy": {"redact_at_or_below": str(REDACT)}},
    "central": {"extra_policy": {"round_counts": str(BASE)}},
    "south": {"extra_policy": {"min_sites": str(MIN_SITES)}},
}


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    root = tmp_path_factory.mktemp("boundaries")
    limited = {site: {"max_queries_per_hour": LIMIT} for site in SITES}
    with ThreadPoolExecutor(2) as pool:
        futures = {
            "options": pool.submit(start_retrying, root / "options", POLICIES, TIMEOUT, PLANTED),
            "limited": pool.submit(start_retrying, root / "limited", limited, None, PLANTED),
        }
        running = {name: fut.result() for name, fut in futures.items()}
    yield running
    for r in running.values():
        r.close()


@pytest.fixture(scope="module")
def options(started: dict[str, Running]) -> Running:
    return started["options"]


@pytest.fixture(scope="module")
def limited(started: dict[str, Running]) -> Running:
    return started["limited"]


def _half_up(n: int) -> int:
    return BASE * ((n + BASE // 2) // BASE)


COUNTS = "SELECT g, COUNT(*) AS n FROM t GROUP BY g"


def test_redaction_rounding_and_min_sites_at_their_boundaries(options: Running) -> None:
    """t = 6 persons withheld, t + 1 = 7 released (rounded: 5); 8 -> 10, 12 -> 10, 13 -> 15 (half
    up at 7.5 and 12.5); 10 persons at one site withheld, at two and three sites released."""
    out = options.client.query(COUNTS).set_index("g").n
    pooled = options.pooled
    sizes = pooled.groupby("g").id.nunique()
    sites = {g: sum(n > 0 for n in per_site) for g, per_site in GROUPS.items()}
    assert [sizes[g] for g in (1, 2, 3, 4, 5)] == [REDACT, REDACT + 1, 8, 12, 13]
    assert [sites[g] for g in (6, 7, 8)] == [MIN_SITES - 1, MIN_SITES, MIN_SITES + 1]
    assert out[1] == WITHHELD and out[6] == WITHHELD
    expected = {2: 5, 3: 10, 4: 10, 5: 15, 7: 10, 8: 10}
    assert {g: _half_up(int(sizes[g])) for g in expected} == expected
    for g, rounded in expected.items():
        assert out[g] == rounded, (g, out[g], sizes[g])
    assert out[0] == 0  # an empty cell is released as 0


def test_rate_limit_admits_limit_queries_and_refuses_the_next_at_every_site(limited: Running) -> None:
    """Three queries an hour at every site: queries 1 to 3 are answered (equal to pandas), the
    fourth is refused with the rule named, and each site writes its own refusal. ``--explain``
    is not counted."""
    truth = limited.pooled.groupby("g").size()
    for _ in range(LIMIT):
        limited.client.explain(COUNTS)
        out = limited.client.query("SELECT COUNT(*) AS n FROM t")
        assert out.n.tolist() == [truth.sum()]
    before = limited.audit_counts()
    with pytest.raises(QueryFailed) as err:
        limited.client.query("SELECT COUNT(*) AS n FROM t")
    assert (err.value.category, err.value.rule) == ("policy", "max_queries_per_hour") and err.value.site in SITES
    assert re.fullmatch(
        rf"site '{err.value.site}' refused \(max_queries_per_hour\): analyst 'analyst' reached {LIMIT} queries "
        r"in the last hour; retry in \d+ s",
        str(err.value),
    ), str(err.value)
    for site in SITES:
        new = limited.wait_audit(site, before[site])
        assert [e["decision"] for e in new] == ["refused"], (site, new)
        assert "max_queries_per_hour" in new[0]["reason"] and new[0]["reveals"] == []


SILENT_SHORT = 1.0  # seconds, against a TIMEOUT of 8: a pause the query must survive
LIVENESS = 6 * TIMEOUT  # the timeout fired at all (a generous bound on two shared cores)


def test_member_silent_shorter_than_the_timeout_does_not_fail_the_query(options: Running) -> None:
    options.client.query(COUNTS)  # warm: every connection is open
    result: dict[str, pd.DataFrame | BaseException] = {}

    def ask() -> None:
        try:
            result["out"] = options.client.query("SELECT COUNT(*) AS n FROM t WHERE g >= 1")
        except BaseException as exc:  # reported by the assertion below
            result["out"] = exc

    with ThreadPoolExecutor(1) as pool, stopped(options, "south"):
        asking = pool.submit(ask)
        time.sleep(SILENT_SHORT)
    asking.result(LIVENESS)
    out = result["out"]
    assert isinstance(out, pd.DataFrame), out
    assert out.n.tolist() == [_half_up(len(options.pooled))]


def test_member_silent_until_the_timeout_fails_the_query_naming_it(options: Running) -> None:
    before = options.audit_counts()
    t0 = time.monotonic()
    with stopped(options, "south"), pytest.raises(QueryFailed) as err:
        options.client.query(COUNTS)
    assert time.monotonic() - t0 < LIVENESS
    assert err.value.site == "south" and "south" in str(err.value)
    for site in ("north", "central"):
        new = options.wait_audit(site, before[site], timeout=LIVENESS)
        assert [e["decision"] for e in new] == ["failed"] and new[0]["reveals"] == [], (site, new)
    assert options.client.query(COUNTS).set_index("g").n[2] == 5  # south serves again
