"""The magics in a real IPython shell against three real agents; results checked with pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from mpc_jupyter.results import MpcResult, _bytes
from mpc_jupyter.teaching import Explanation, SharesView

from ..query.quantile_reference import coarsened_type7
from .conftest import Lung


def test_grouped_statistics_equal_pandas_on_the_pooled_data(ip: InteractiveShell, lung: Lung) -> None:
    result = ip.run_cell_magic(
        "mpc",
        "",
        "SELECT sex, COUNT(*) AS n, AVG(age) AS mean_age, STDDEV(age) AS sd, MEDIAN(age) AS med,\n"
        "       PROPORTION(status = 1) AS dead\nFROM lung GROUP BY sex",
    )
    assert isinstance(result, MpcResult)
    expected = lung.pooled.groupby("sex").agg(
        n=("id", "size"), mean_age=("age", "mean"), sd=("age", "std"), med=("age", "median")
    )
    # medians: coarsened until 5 persons (the policies' k) share their bins (docs/privacy-quantiles.md)
    expected["med"] = [coarsened_type7(g.age, 0.5, (30, 90, 1), 5).value for _, g in lung.pooled.groupby("sex")]
    got = result.set_index("sex")
    assert got["n"].astype(int).tolist() == expected["n"].tolist()
    for column in ("mean_age", "sd", "med"):
        np.testing.assert_allclose(got[column].astype(float), expected[column], rtol=1e-6)
    dead = lung.pooled.groupby("sex")["status"].mean()
    np.testing.assert_allclose(got["dead"].astype(float), dead, rtol=1e-6)
    assert (got["dead_ci_low"] < got["dead"]).all() and (got["dead"] < got["dead_ci_high"]).all()


def test_small_cells_are_suppressed(ip: InteractiveShell, lung: Lung) -> None:
    result = ip.run_cell_magic("mpc", "", "SELECT ph_ecog, COUNT(*) AS n FROM lung WHERE age > 65 GROUP BY ph_ecog")
    counts = lung.pooled[lung.pooled.age > 65].groupby("ph_ecog").size().reindex(range(4), fill_value=0)
    assert ((counts > 0) & (counts < 5)).any()  # the premise: a small cell (one ECOG-3 patient)
    for value, count in zip(result["n"], counts, strict=True):
        assert value == ("<5" if 0 < count < 5 else count)  # an empty cell is released as 0
    assert "suppressed" in result.receipt_line()


def test_parameters_are_bound_from_the_notebook(ip: InteractiveShell, lung: Lung) -> None:
    ip.user_ns.update(cut=65, ecogs=[0, 1])
    result = ip.run_cell_magic("mpc", "", "SELECT COUNT(*) AS n FROM lung WHERE age > {cut} AND ph_ecog IN :ecogs")
    pooled = lung.pooled
    assert result["n"][0] == ((pooled.age > 65) & pooled.ph_ecog.isin([0, 1])).sum()
    assert "age > 65 AND ph_ecog IN (0, 1)" in result.attrs["query"]


def test_an_injection_attempt_stays_a_string_literal(ip: InteractiveShell, lung: Lung) -> None:
    sql = "SELECT COUNT(*) AS n FROM lung WHERE CAST(sex AS VARCHAR) = {s}"
    ip.user_ns["s"] = "1"
    assert ip.run_cell_magic("mpc", "", sql)["n"][0] == (lung.pooled.sex == 1).sum()
    ip.user_ns["s"] = "1' OR '1'='1"
    result = ip.run_cell_magic("mpc", "", sql)
    assert result["n"][0] == 0  # no row has that text as its sex: the whole value was one literal
    assert "'1'' OR ''1''=''1'" in result.attrs["query"]


def test_line_magic_is_not_expanded_by_ipython(ip: InteractiveShell, lung: Lung) -> None:
    ip.user_ns["s"] = "2"
    ip.run_cell("%mpc line_result << SELECT COUNT(*) AS n FROM lung WHERE CAST(sex AS VARCHAR) = {s}")
    stored = ip.user_ns["line_result"]
    assert "= '2'" in stored.attrs["query"]  # bound as a quoted literal, not pasted by IPython
    assert stored["n"][0] == (lung.pooled.sex == 2).sum()


def test_sql_comments(ip: InteractiveShell, lung: Lung) -> None:
    cell = (
        "-- patients over 60 {not_a_variable}\n"
        "SELECT COUNT(*) AS n /* block :comment */\n"
        "FROM lung\n"
        "WHERE age > 60 -- trailing, with --out words\n"
    )
    result = ip.run_cell_magic("mpc", "", cell)
    assert result["n"][0] == (lung.pooled.age > 60).sum()


def test_storage_with_double_angle_shows_nothing(ip: InteractiveShell, lung: Lung) -> None:
    shown = ip.run_cell_magic("mpc", "", "by_sex <<\nSELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    assert shown is None
    stored = ip.user_ns["by_sex"]
    assert isinstance(stored, MpcResult)
    assert stored["n"].tolist() == lung.pooled.groupby("sex").size().tolist()


def test_out_stores_and_shows(ip: InteractiveShell) -> None:
    shown = ip.run_cell_magic("mpc", "--out total", "SELECT COUNT(*) AS n FROM lung")
    assert shown is ip.user_ns["total"]
    assert shown["n"][0] == 228


def test_run_cell_end_to_end(ip: InteractiveShell) -> None:
    outcome = ip.run_cell("%%mpc\nSELECT COUNT(*) AS n FROM lung")
    assert outcome.success and outcome.result["n"][0] == 228


def test_receipt_line_in_the_html(ip: InteractiveShell) -> None:
    result = ip.run_cell_magic("mpc", "", "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    page = result._repr_html_()
    assert "<table" in page and 'class="mpc-receipt"' in page
    line = result.receipt_line()
    assert line.startswith("3 sites (north, central, south)")
    explained = ip.run_cell_magic("mpc", "--explain", "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    rounds = sum(s["rounds"] for s in explained.steps)
    size = sum(s["bytes"] for s in explained.steps)
    assert f"{rounds:,} rounds · {_bytes(size)}" in line  # the committee's own account of the plan's cost
    assert f"plan {result.attrs['plan_digest'][:8]}" in line
    digest = ip.run_line_magic("mpc", "status")["policy"].iloc[0]
    assert f"policy {digest[:8]}" in line


def test_receipts_and_plan_on_request(ip: InteractiveShell) -> None:
    ip.run_cell_magic("mpc", "", "counted <<\nSELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    table = ip.run_line_magic("mpc", "receipts counted")
    assert sorted(table["site"]) == ["central", "north", "south"]
    assert table["signature"].str.len().eq(128).all()
    plan = ip.run_line_magic("mpc", "plan counted")
    assert isinstance(plan, Explanation)
    assert plan.text.startswith(f"Plan {ip.user_ns['counted'].attrs['plan_digest'][:16]}")


def test_explain_renders_reveal_points_without_computing(ip: InteractiveShell) -> None:
    results = ip.magics_manager.registry["MpcMagic"].manager.results
    before = len(results)
    explanation = ip.run_cell_magic(
        "mpc", "--explain", "SELECT sex, PROPORTION(status = 1) AS p FROM lung GROUP BY sex"
    )
    assert isinstance(explanation, Explanation) and len(results) == before  # nothing was computed
    page = explanation._repr_html_()
    assert "Reveal points" in page
    assert explanation.reveals and all(r.split(" ")[0] in page for r in explanation.reveals)
    assert any(r.startswith("p:") and "ci_low" in r for r in explanation.reveals)
    assert "SELECT CASE WHEN" in page  # each site's local SQL
    assert {"suppress", "wilson"} <= {s["op"] for s in explanation.steps}
    assert "<table" in page and "rounds" in page


def test_shares_show_what_each_member_sent(ip: InteractiveShell, lung: Lung) -> None:
    view = ip.run_cell_magic("mpc", "--shares", "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    assert isinstance(view, SharesView)
    counts = lung.pooled.groupby("sex").size().tolist()
    assert view.reconstructed()[:2] == counts  # x0 + x1 + x2 of the first words: the counts
    words = [int(w, 16) for m in view.members.values() for row in m["words"] for w in row[:2]]
    assert not set(words) & set(counts)  # no member alone holds a count
    page = view._repr_html_()
    assert "What each committee member sent you" in page and "mpc-receipt" in page


def test_config_lists_the_traits(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("config", "MpcMagic")
    listing = capsys.readouterr().out
    for trait in ("timeout", "display_limit", "chart_kind", "chart_size", "progress_threshold"):
        assert f"MpcMagic.{trait}=" in listing
    assert "Seconds to wait for the committee" in listing


def test_display_limit_applies(ip: InteractiveShell) -> None:
    result = ip.run_cell_magic(
        "mpc", "", "SELECT ph_ecog, sex, COUNT(*) AS n FROM lung WHERE ph_ecog IS NOT NULL GROUP BY ph_ecog, sex"
    )
    ip.run_line_magic("config", "MpcMagic.display_limit = 4")
    try:
        assert "8 rows" in result._repr_html_()
        assert result._repr_html_().count("<tr>") < 8
    finally:
        ip.run_line_magic("config", "MpcMagic.display_limit = 60")


def test_status_table(ip: InteractiveShell) -> None:
    table = ip.run_line_magic("mpc", "status")
    assert list(table.index) == ["north", "central", "south"]
    assert table["online"].all()
    assert (table["tables"] == "lung").all()


def test_results_stay_dataframes(ip: InteractiveShell) -> None:
    result = ip.run_cell_magic("mpc", "", "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    derived = result.head(1)
    assert type(derived) is pd.DataFrame
    assert result.n.sum() == 228 and list(result.columns) == ["sex", "n"]


def test_side_panel_state_follows_status_and_queries(ip: InteractiveShell) -> None:
    result = ip.run_cell_magic("mpc", "", "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    state = ip.magics_manager.registry["MpcMagic"].manager.publisher.latest
    assert [s["name"] for s in state["sites"]] == ["north", "central", "south"]
    assert all(s["online"] and s["tables"] == ["lung"] for s in state["sites"])
    last = state["queries"][-1]
    assert last["text"] == result.attrs["query"]
    assert {r["site"] for r in last["receipts"]} == {"north", "central", "south"}
    reveals = {r["name"]: r["cells"] for r in last["reveals"]}
    assert reveals["n: pooled row count"] == 2 and any(name.startswith("suppression flags") for name in reveals)


def test_side_panel_counts_only_the_cells_opened(ip: InteractiveShell) -> None:
    text = "SELECT ph_ecog, COUNT(*) AS n FROM lung WHERE ph_ecog IS NOT NULL GROUP BY ph_ecog"
    result = ip.run_cell_magic("mpc", "", text)
    state = ip.magics_manager.registry["MpcMagic"].manager.publisher.latest
    opened = {r["name"]: r["cells"] for r in state["queries"][-1]["reveals"]}["n: pooled row count"]
    assert opened == len(result) - sum(result.attrs["suppressed"]["n"]) and opened < len(result)


def test_side_panel_state_names_the_consortium_and_its_policy(ip: InteractiveShell) -> None:
    magic = ip.magics_manager.registry["MpcMagic"]
    ip.run_line_magic("mpc", "status")
    consortium = magic.manager.publisher.latest["consortium"]
    assert consortium["analyst"] == magic.manager.consortium.analyst
    assert consortium["committee"] == "north, central, south"
    digests = {s.policy_digest[:16] for s in magic.manager.sites}
    if len(digests) == 1:
        assert consortium["policy"] == {"digest": digests.pop(), "same at": "3/3 sites"}
    else:
        assert set(consortium["policy"].values()) == digests


def test_kaplan_meier_cell_with_plot(ip: InteractiveShell, lung: Lung) -> None:
    """A KAPLAN_MEIER cell (status 1 = dead here): the result keeps its curves (the median is the
    first released time at or below 0.5) and ``--plot`` draws one step curve per sex."""
    from site_agent.models.kaplan_meier import KaplanMeier

    figure = ip.run_cell_magic(
        "mpc", "--out km --plot", "KAPLAN_MEIER time, status BY sex FROM lung AT 0 TO 1100 STEP 1"
    )
    km = ip.user_ns["km"]
    assert isinstance(km, MpcResult) and km.attrs["logrank"]["degrees_of_freedom"] == 1
    for sex in (1, 2):
        sf = KaplanMeier(km, sex=sex).survival_function_.iloc[:, 0]
        assert KaplanMeier(km, sex=sex).median_survival_time_ == sf.index[sf <= 0.5].min()
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["sex = 1", "sex = 2"]
def test_dp_cell_and_the_budget_per_site(ip: InteractiveShell, lung: Lung) -> None:
    """``%%mpc --epsilon 0.5``: noisy counts with intervals that include the noise, the epsilon
    and noise scale in ``.attrs``; ``--explain --dp`` states epsilon and sensitivities; ``%mpc
    budget`` shows the query charged at every site (default budget 10)."""
    before = ip.run_line_magic("mpc", "budget")
    explained = ip.run_cell_magic("mpc", "--explain --dp", "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    assert isinstance(explained, Explanation)
    assert "(1, 1e-05)-differential privacy" in str(explained) and "sensitivity 1 / 1" in str(explained)
    result = ip.run_cell_magic("mpc", "--epsilon 0.5", "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
    got = result.set_index("sex").loc[[1, 2]]
    truth = lung.pooled.groupby("sex").size()
    sd = result.attrs["noise_scale"]["n"]
    assert result.attrs["epsilon"] == 0.5 and 5 < sd < 20
    assert (abs(got["n"] - truth) < 6 * sd).all()
    assert (got["n_ci_low"] < got["n"]).all() and (got["n"] < got["n_ci_high"]).all()
    assert "(0.5, 1e-05)-differential privacy" in str(ip.run_line_magic("mpc", "plan"))  # the plan it ran
    budget = ip.run_line_magic("mpc", "budget")
    assert list(budget.index) == ["north", "central", "south"]
    assert (budget["queries"] == before["queries"] + 1).all()
    assert (budget["spent"] > before["spent"]).all() and (budget["budget"] == 10.0).all()
    np.testing.assert_allclose(budget["remaining"], 10.0 - budget["spent"])
