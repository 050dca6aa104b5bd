"""Charts: bars, error bars and suppressed gaps counted on the figures (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from mpc_jupyter.charts import bar, forest, hist, plot, step

from .conftest import Lung


def data_bars(fig: Figure) -> list[float]:
    """Heights of the drawn value bars (suppressed gaps excluded)."""
    ax = fig.axes[0]
    return [p.get_height() for c in ax.containers if isinstance(c, BarContainer) for p in c if p.get_gid() is None]


def gaps(fig: Figure) -> int:
    return sum(1 for p in fig.axes[0].patches if p.get_gid() == "suppressed")


def error_bars(fig: Figure) -> int:
    return sum(len(c.lines[2][0].get_segments()) for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer))


def labels(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def test_grouped_bars_with_intervals_and_a_suppressed_gap() -> None:
    frame = pd.DataFrame(
        {
            "sex": [1, 1, 2, 2],
            "ecog": [0, 1, 0, 1],
            "p": [0.5, "<5", 0.3, 0.4],
            "p_ci_low": [0.4, "<5", 0.2, 0.3],
            "p_ci_high": [0.6, "<5", 0.45, 0.5],
        }
    )
    frame.attrs["plan"] = {"keys": [{"name": "sex"}, {"name": "ecog"}]}
    fig = bar(frame)
    assert sorted(data_bars(fig)) == [0.3, 0.4, 0.5]  # the suppressed cell is not a zero bar
    assert gaps(fig) == 1 and "<5" in labels(fig)
    assert error_bars(fig) == 3
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2"]
    assert len(fig.axes[0].get_legend().get_texts()) == 2


def test_histogram_from_binned_counts() -> None:
    frame = pd.DataFrame({"band": ["<50", "50-59", "60-69", "70+"], "n": [12, "<5", 80, 40]})
    fig = hist(frame)
    assert data_bars(fig) == [12, 80, 40] and gaps(fig) == 1
    widths = {round(p.get_width(), 6) for c in fig.axes[0].containers for p in c if p.get_gid() is None}
    assert widths == {1.0}  # bins touch


def test_step_curves_with_bands() -> None:
    frame = pd.DataFrame(
        {
            "time": [0, 1, 2, 0, 1, 2],
            "arm": ["a"] * 3 + ["b"] * 3,
            "estimate": [1.0, 0.8, 0.6, 1.0, 0.7, "<5"],
            "estimate_ci_low": [1.0, 0.7, 0.5, 1.0, 0.6, "<5"],
            "estimate_ci_high": [1.0, 0.9, 0.7, 1.0, 0.8, "<5"],
        }
    )
    fig = step(frame, group="arm")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    assert "<5" in labels(fig)


def test_forest_plot_contract() -> None:
    frame = pd.DataFrame(
        {"coef": [0.5, -0.2, "<5"], "coef_ci_low": [0.1, -0.5, "<5"], "coef_ci_high": [0.9, 0.1, "<5"]},
        index=["age", "sex", "ecog"],
    )
    fig = forest(frame)
    assert error_bars(fig) == 2
    assert {t.get_text() for t in fig.axes[0].get_yticklabels()} == {"age", "sex", "ecog"}
    assert "<5" in labels(fig)
    with pytest.raises(ValueError, match="needs columns"):
        forest(frame.drop(columns="coef_ci_low"))


def test_auto_kind() -> None:
    assert plot(pd.DataFrame({"coef": [1.0], "coef_ci_low": [0.5], "coef_ci_high": [2.0]}), "auto").axes[0].lines
    with pytest.raises(ValueError, match="unknown chart kind"):
        plot(pd.DataFrame({"a": [1]}), "pie")


def test_plot_option_on_a_real_result(ip: InteractiveShell, lung: Lung) -> None:
    fig = ip.run_cell_magic(
        "mpc",
        "--plot bar",
        "SELECT ph_ecog, PROPORTION(status = 1) AS dead FROM lung WHERE ph_ecog IS NOT NULL GROUP BY ph_ecog",
    )
    assert isinstance(fig, Figure)
    counts = lung.pooled.groupby("ph_ecog").size().reindex(range(4), fill_value=0)
    shown = int((counts >= 5).sum())
    assert len(data_bars(fig)) == shown and gaps(fig) == 4 - shown and error_bars(fig) == shown
    rates = lung.pooled.groupby("ph_ecog")["status"].mean()[counts >= 5]
    assert data_bars(fig) == pytest.approx(rates.tolist(), rel=1e-6)
    ip.run_line_magic("config", "MpcMagic.chart_size = (3.0, 2.0)")
    try:
        small = ip.run_cell_magic("mpc", "--plot", "SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")
        assert tuple(small.get_size_inches()) == (3.0, 2.0)
    finally:
        ip.run_line_magic("config", "MpcMagic.chart_size = (6.4, 4.0)")


def test_figures_display_as_png(ip: InteractiveShell) -> None:
    fig = hist(pd.DataFrame({"k": ["a", "b"], "n": [5, 6]}))
    data, _ = ip.display_formatter.format(fig)
    assert data["image/png"][:4] == b"\x89PNG"


def test_long_category_labels_slant_short_ones_do_not() -> None:
    wards = ["cardiology", "respiratory", "oncology", "orthopaedics", "general_medicine", "general_surgery", "icu"]
    long = bar(pd.DataFrame({"ward": wards, "n": range(10, 10 + len(wards))}))
    short = bar(pd.DataFrame({"sex": ["F", "M"], "n": [10, 12]}))
    assert {t.get_rotation() for t in long.axes[0].get_xticklabels()} == {30.0}
    assert {t.get_horizontalalignment() for t in long.axes[0].get_xticklabels()} == {"right"}
    assert {t.get_rotation() for t in short.axes[0].get_xticklabels()} == {0.0}
