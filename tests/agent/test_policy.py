"""Policy files, strictest-wins combination, refusals naming site and rule, rate limits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from site_agent.agent.planning import compile_query, dp_request
from site_agent.errors import ConfigError, PolicyRefusal, QueryError
from site_agent.policy import Policy, RateLimiter, combine, load_policy, render_policy_template
from site_agent.query import schema_from_duckdb

A = """
[policy]
min_cell_size = 5
analysts = "*"
statement_kinds = ["aggregate", "per_site_breakdown", "model"]
max_groups = 200
max_queries_per_hour = 50
allow_min_max = true

[tables.lung]
columns = ["age", "sex", "stage", "time", "status"]
identifiers = ["patient_id"]

[tables.visits]
columns = "*"
identifiers = ["mrn"]
"""

B = """
[policy]
min_cell_size = 11
analysts = ["alice", "bob"]
statement_kinds = ["aggregate", "model"]
max_groups = 500
max_queries_per_hour = 20

[tables.LUNG]
columns = ["age", "sex", "time", "status", "ward"]
identifiers = ["patient_id", "ward_bed"]
"""

C = """
[policy]
analysts = ["alice", "carol"]
statement_kinds = ["aggregate"]
max_groups = 300

[tables.lung]
columns = "*"
identifiers = ["dob"]
"""


def _load(tmp_path: Path, site: str, text: str) -> Policy:
    path = tmp_path / f"{site}.toml"
    path.write_text(text)
    return load_policy(path, site)


@pytest.fixture
def three(tmp_path: Path) -> tuple[Policy, Policy, Policy]:
    return _load(tmp_path, "a", A), _load(tmp_path, "b", B), _load(tmp_path, "c", C)


def _refusal(call: object, *args: str) -> tuple[str, str]:
    with pytest.raises(PolicyRefusal) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.site in str(info.value) and info.value.rule in str(info.value)
    return info.value.site, info.value.rule


def test_defaults_and_case(three: tuple[Policy, Policy, Policy]) -> None:
    _, b, c = three
    assert c.min_cell_size == 5 and c.allow_min_max is False
    assert b.max_queries_per_hour == 20
    assert "lung" in b.tables  # table names fold to lower case
    b.check_column("Lung", "AGE")


def test_single_site_refusals(three: tuple[Policy, Policy, Policy]) -> None:
    a, b, _ = three
    assert _refusal(b.check_analyst, "mallory") == ("b", "analysts")
    a.check_analyst("mallory")
    assert _refusal(b.check_kind, "per_site_breakdown") == ("b", "statement_kinds")
    assert _refusal(a.check_table, "admissions") == ("a", "tables")
    assert _refusal(a.check_column, "lung", "patient_id") == ("a", "identifiers")
    assert _refusal(a.check_column, "lung", "ward") == ("a", "columns")
    a.check_column("visits", "anything")  # "*" exposes every non-identifier
    assert _refusal(a.check_column, "visits", "mrn") == ("a", "identifiers")
    assert _refusal(b.check_min_max) == ("b", "allow_min_max")
    with pytest.raises(PolicyRefusal) as info:
        a.check_groups(201)
    assert (info.value.site, info.value.rule) == ("a", "max_groups")
    a.check_groups(200)


def test_combine_strictest_wins(three: tuple[Policy, Policy, Policy]) -> None:
    both = combine(three)
    assert both.min_cell_size == 11
    assert both.analysts == frozenset({"alice"})
    assert both.statement_kinds == frozenset({"aggregate"})
    assert both.max_groups == 200
    assert both.max_queries_per_hour == 20
    assert both.allow_min_max is False
    assert set(both.tables) == {"lung"}
    assert both.tables["lung"].columns == frozenset({"age", "sex", "time", "status"})
    assert both.tables["lung"].identifiers == frozenset({"patient_id", "ward_bed", "dob"})
    # Combining is associative in effect and does not depend on order.
    a, b, c = three
    assert combine([combine([a, b]), c]).digest() == both.digest() == combine([c, b, a]).digest()


def test_combined_refusal_names_the_refusing_site(three: tuple[Policy, Policy, Policy]) -> None:
    both = combine(three)
    both.check_analyst("alice")
    assert _refusal(both.check_analyst, "bob") == ("c", "analysts")
    assert _refusal(both.check_analyst, "carol") == ("b", "analysts")
    assert _refusal(both.check_kind, "model") == ("c", "statement_kinds")
    assert _refusal(both.check_table, "visits") == ("b", "tables")
    assert _refusal(both.check_column, "lung", "stage") == ("b", "columns")
    assert _refusal(both.check_column, "lung", "dob") == ("c", "identifiers")
    assert _refusal(both.check_min_max) == ("b", "allow_min_max")


def test_digest_is_canonical(tmp_path: Path, three: tuple[Policy, Policy, Policy]) -> None:
    a = three[0]
    reordered = "\n".join(reversed(A.strip().split("\n\n")))  # sections in another order
    reordered = "# a comment\n" + reordered
    assert _load(tmp_path, "a2", reordered).digest() == a.digest()
    expected = hashlib.sha256(json.dumps(a.to_json(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert a.digest() == expected
    assert _load(tmp_path, "a3", A.replace("min_cell_size = 5", "min_cell_size = 6")).digest() != a.digest()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (A.replace("min_cell_size = 5", "min_cell_sise = 5"), "policy.min_cell_sise: unknown key"),
        (A.replace("min_cell_size = 5", "min_cell_size = 0"), "policy.min_cell_size: must be at least 1"),
        (A.replace("min_cell_size = 5", 'min_cell_size = "5"'), "policy.min_cell_size: must be an integer"),
        (A.replace('analysts = "*"\n', ""), "policy.analysts: missing"),
        (A.replace('"model"]', '"modle"]'), "policy.statement_kinds: unknown kind 'modle'"),
        (A.replace('"time", "status"]', '"time", "patient_id"]'), "tables.lung.columns: 'patient_id'"),
        ("[policy\n", "invalid TOML"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=r"bad\.toml") as info:
        _load(tmp_path, "bad", text)
    assert where in str(info.value)


def test_template_loads_and_allows_nothing(tmp_path: Path) -> None:
    policy = _load(tmp_path, "new", render_policy_template("new"))
    assert policy.min_cell_size == 5
    assert _refusal(policy.check_analyst, "alice") == ("new", "analysts")
    assert _refusal(policy.check_table, "lung") == ("new", "tables")


NEUTRAL = """
[policy]
min_cell_size = 20
analysts = ["alice", "dave"]
statement_kinds = ["aggregate", "per_site_breakdown"]
max_groups = 100
max_queries_per_hour = 10
"""


def test_a_site_without_data_has_no_table_rules_but_its_other_rules_count(
    tmp_path: Path, three: tuple[Policy, Policy, Policy]
) -> None:
    a, b, _ = three
    path = tmp_path / "n.toml"
    path.write_text(NEUTRAL)
    n = load_policy(path, "n", data=False)
    assert n.tables is None and not n.holds_data and a.holds_data
    both = combine([a, n, b])
    assert both.holds_data
    # Tables and columns: exactly what the data sites alone allow.
    assert both.tables == combine([a, b]).tables
    both.check_column("lung", "age")
    assert _refusal(both.check_column, "lung", "ward") == ("a", "columns")
    assert _refusal(both.check_column, "lung", "stage") == ("b", "columns")
    assert _refusal(both.check_column, "lung", "ward_bed") == ("b", "identifiers")
    assert _refusal(both.check_table, "visits") == ("b", "tables")
    assert both.exposed_columns("lung", ["age", "sex", "ward", "patient_id"]) == ["age", "sex"]
    # Every other rule of the site without data counts, and refusals name it.
    assert both.min_cell_size == 20 and both.max_groups == 100 and both.max_queries_per_hour == 10
    assert _refusal(both.check_analyst, "bob") == ("n", "analysts")
    assert _refusal(both.check_kind, "model") == ("n", "statement_kinds")
    with pytest.raises(PolicyRefusal) as info:
        both.check_groups(101)
    assert (info.value.site, info.value.rule) == ("n", "max_groups")
    # Order and nesting do not matter; the JSON form (what peers exchange) keeps "no table rules".
    assert combine([combine([n, b]), a]).digest() == both.digest()
    assert n.to_json()["tables"] is None
    again = Policy.from_json("n", n.to_json())
    assert again == n and again.digest() == n.digest()
    assert combine([a, again, b]).digest() == both.digest()


def test_without_any_data_nothing_is_exposed(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text(NEUTRAL)
    n = load_policy(path, "n", data=False)
    assert _refusal(n.check_table, "lung") == ("n", "tables")
    alone = combine([n])
    assert alone.tables == {}
    assert _refusal(alone.check_column, "lung", "age") == ("n", "tables")
    assert alone.exposed_columns("lung", ["age"]) == []


def test_rate_limiter_sliding_window() -> None:
    now = [1000.0]
    limiter = RateLimiter("a", limit=3, clock=lambda: now[0])
    for t in (0, 10, 20):
        now[0] = 1000.0 + t
        limiter.acquire("alice")
    limiter.acquire("bob")  # per analyst
    now[0] = 1000.0 + 3599
    with pytest.raises(PolicyRefusal) as info:
        limiter.acquire("alice")
    assert (info.value.site, info.value.rule) == ("a", "max_queries_per_hour")
    assert "retry in 1 s" in str(info.value)
    now[0] = 1000.0 + 3600  # the first query leaves the window
    assert limiter.remaining("alice") == 1
    limiter.acquire("alice")
    with pytest.raises(PolicyRefusal):
        limiter.acquire("alice")


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_rate_limit_boundary(limit: int) -> None:
    """limit - 1 and limit queries are admitted, limit + 1 is refused; a refused query does not
    count, and each admitted one leaves the window exactly one window later."""
    now = [0.0]
    limiter = RateLimiter("a", limit=limit, clock=lambda: now[0], window=100.0)
    for k in range(limit):  # queries 1 .. limit, one second apart
        assert limiter.remaining("alice") == limit - k
        now[0] = float(k)
        limiter.acquire("alice")
    assert limiter.remaining("alice") == 0
    for _ in range(2):  # query limit + 1, asked twice: refused both times
        with pytest.raises(PolicyRefusal) as info:
            limiter.acquire("alice")
        assert (info.value.site, info.value.rule) == ("a", "max_queries_per_hour")
        assert f"reached {limit} queries" in str(info.value)
    now[0] = 99.999  # the first query is still inside its window
    assert limiter.remaining("alice") == 0
    now[0] = 100.0  # and leaves it now: exactly one more is admitted
    assert limiter.remaining("alice") == 1
    limiter.acquire("alice")
    with pytest.raises(PolicyRefusal):
        limiter.acquire("alice")


@pytest.mark.parametrize(("max_groups", "refused"), [(5, True), (6, False), (7, False)])
def test_max_groups_boundary_in_the_planner(tmp_path: Path, max_groups: int, refused: bool) -> None:
    """A query of 2 x 3 = 6 cells under max_groups = cells - 1, cells and cells + 1, through the
    agents' compile step with the combined policy (the strictest site's limit applies)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE lung (sex VARCHAR, ward VARCHAR, age DOUBLE)")
    schema = schema_from_duckdb(con, domains={"lung.sex": ["F", "M"], "lung.ward": ["a", "b", "c"]})
    policy = combine(
        [
            _load(tmp_path, "a", C.replace("max_groups = 300", f"max_groups = {max_groups}")),
            _load(tmp_path, "b", C.replace("max_groups = 300", f"max_groups = {max_groups + 1}")),
        ]
    )
    text = "SELECT sex, ward, COUNT(*) AS n FROM lung GROUP BY sex, ward"
    if not refused:
        shapes = {r.shape for r in compile_query(text, schema, policy).reveals}
        # planned: one value per cell, with each key's (other) cell: (2 + 1) x (3 + 1); max_groups
        # counts the cells the analyst asked for
        assert (12,) in shapes, shapes
        return
    with pytest.raises(PolicyRefusal) as info:
        compile_query(text, schema, policy)
    assert (info.value.site, info.value.rule) == ("a", "max_groups")
    assert f"6 groups asked, at most {max_groups} allowed" in str(info.value)


@pytest.mark.parametrize(("groups", "refused"), [(199, False), (200, False), (201, True)])
def test_max_groups_boundary_in_the_policy(three: tuple[Policy, Policy, Policy], groups: int, refused: bool) -> None:
    a = three[0]  # max_groups = 200
    if refused:
        assert _refusal(a.check_groups, groups) == ("a", "max_groups")  # type: ignore[arg-type]
    else:
        a.check_groups(groups)
        assert a.max_groups >= groups


# --- [privacy]: DP mode and budgets -----------------------------------------------------------


def _with_privacy(tmp_path: Path, site: str, privacy: str) -> Policy:
    return _load(tmp_path, site, C + "\n[privacy]\n" + privacy)


def test_privacy_defaults_and_strictest_combination(tmp_path: Path, three: tuple[Policy, Policy, Policy]) -> None:
    a, _, _ = three
    assert a.privacy.to_json() == {
        "mode": "both", "epsilon_per_query": 1.0, "epsilon": 10.0, "delta": 1e-5, "period": "365d",
        "max_rows_per_person": 1,
    }  # fmt: skip
    b = _with_privacy(tmp_path, "b", 'epsilon_per_query = 0.5\nepsilon = 20\ndelta = 1e-6\nperiod = "30d"\n')
    c = _with_privacy(tmp_path, "c", 'epsilon = 4.0\nperiod = "400d"\nmax_rows_per_person = 3\n')
    both = combine([a, b, c]).privacy
    assert (both.epsilon_per_query, both.epsilon, both.delta, both.period, both.max_rows_per_person) == (
        0.5, 4.0, 1e-6, "400d", 1,
    )  # fmt: skip
    assert combine([b, _with_privacy(tmp_path, "d", 'period = "none"\n')]).privacy.period == "none"
    joined = combine([a, b, c])
    assert joined.budget_site() == "c"
    with pytest.raises(PolicyRefusal) as err:
        joined.check_epsilon(0.8)
    assert (err.value.site, err.value.rule) == ("b", "epsilon_per_query")
    joined.check_epsilon(0.5)
    assert Policy.from_json("x", joined.to_json()).privacy == joined.privacy


def test_modes_combine_and_refusals_name_the_site(tmp_path: Path, three: tuple[Policy, Policy, Policy]) -> None:
    a, _, _ = three
    dp_only = _with_privacy(tmp_path, "d", 'mode = "dp"\n')
    exact_only = _with_privacy(tmp_path, "e", 'mode = "exact"\n')
    combine([a, dp_only]).check_mode(True)
    with pytest.raises(PolicyRefusal) as err:
        combine([a, dp_only]).check_mode(False)
    assert (err.value.site, err.value.rule) == ("d", "mode")
    with pytest.raises(PolicyRefusal) as err:
        combine([a, exact_only]).check_mode(True)
    assert (err.value.site, err.value.rule) == ("e", "mode")


@pytest.mark.parametrize(
    "privacy, key",
    [
        ('mode = "noisy"', "mode"),
        ("epsilon = 0", "epsilon"),
        ("delta = 1", "delta"),
        ('period = "1 year"', "period"),
        ("max_rows_per_person = 0", "max_rows_per_person"),
        ('epsilon = "1"', "epsilon"),
        ("budget = 3", "budget"),
    ],
)
def test_bad_privacy_sections_name_the_key(tmp_path: Path, privacy: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _with_privacy(tmp_path, "x", privacy + "\n")


@pytest.mark.parametrize("raw", [{"epsilon": "1"}, {"epsilon": -1}, {"epsilon": float("nan")}, {"eps": 1}, [1], True])
def test_a_malformed_dp_parameter_is_a_query_error(three: tuple[Policy, Policy, Policy], raw: object) -> None:
    with pytest.raises(QueryError):
        dp_request(raw, combine(three))


def test_the_dp_parameter_defaults_to_the_strictest_cap(tmp_path: Path, three: tuple[Policy, Policy, Policy]) -> None:
    capped = combine([*three, _with_privacy(tmp_path, "s", "epsilon_per_query = 0.25\ndelta = 1e-7\n")])
    assert dp_request(None, capped) is None
    request = dp_request({"epsilon": None}, capped)
    assert request is not None and (request.epsilon, request.delta) == (0.25, 1e-7)
    with pytest.raises(PolicyRefusal, match="epsilon_per_query"):
        dp_request({"epsilon": 0.3}, capped)
