"""Cohort explorer: pick a table, group-by keys, value filters and a measure; see the pooled table.

Every change rebuilds the query text (``querytext.CohortQuery``) and, ``debounce`` seconds after
the last change of a burst, runs it (``consortium.query``). Suppressed cells come back as
``"<k"`` strings and are shown highlighted, so the analyst sees what the policy withheld.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as widgets
import pandas as pd
import traitlets

from site_agent.query.catalog import Schema
from site_agent.query.schema_file import load_schema_file

from ..client import Consortium
from .querytext import MEASURES, CohortQuery, key_columns, measure_columns
from .timing import Clock, Debouncer, ThreadClock

Runner = Callable[[str], pd.DataFrame]


def _is_suppressed(value: object) -> bool:
    return isinstance(value, str) and value.startswith("<")


def result_html(frame: pd.DataFrame) -> str:
    """The result as an HTML table; suppressed cells (``"<k"``) greyed and marked."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for v in values:
            if _is_suppressed(v):
                cells.append(
                    f'<td class="mpc-suppressed" style="color:#8c959f" title="suppressed">{html.escape(v)}</td>'
                )
            else:
                text = f"{v:,.4g}" if isinstance(v, float) else str(v)
                cells.append(f"<td>{html.escape(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="mpc-result"><tr>{head}</tr>{"".join(rows)}</table>'


class CohortExplorer(widgets.VBox):  # type: ignore[misc]
    """Interactive grouped queries over one consortium (``CohortExplorer.of(consortium)``)."""

    table = traitlets.Unicode(help="the table queried")
    group_by = traitlets.List(trait=traitlets.Unicode(), help="key columns (each with a public domain)")
    filters = traitlets.Dict(help="column -> list of kept values (column IN (...))")
    measure = traitlets.Unicode("count", help=f"one of {', '.join(MEASURES)}")
    column = traitlets.Unicode(None, allow_none=True, help="the measured column (not for count)")
    debounce = traitlets.Float(0.3, help="seconds after the last change before the query runs")
    query_text = traitlets.Unicode(read_only=True)
    result = traitlets.Instance(pd.DataFrame, allow_none=True)
    error = traitlets.Unicode("")
    runs = traitlets.Int(0, help="queries sent so far")

    def __init__(
        self, schema: Schema, run: Runner, table: str | None = None, clock: Clock | None = None, debounce: float = 0.3
    ) -> None:
        if not schema.tables:
            raise ValueError("the schema has no tables")
        self.schema, self.runner = schema, run
        self._debouncer = Debouncer(debounce, self._run, clock or ThreadClock())
        self._syncing = False
        names = sorted(schema.tables)
        self.table_box = widgets.Dropdown(options=names, description="table")
        self.group_box = widgets.SelectMultiple(description="group by", rows=6)
        self.filter_column_box = widgets.Dropdown(description="filter on")
        self.filter_values_box = widgets.SelectMultiple(description="keep", rows=6)
        self.measure_box = widgets.Dropdown(
            options=[(label, key) for key, label in MEASURES.items()], description="measure"
        )
        self.column_box = widgets.Dropdown(description="of")
        self.query_box = widgets.HTML()
        self.status_box = widgets.HTML()
        self.result_box = widgets.HTML()
        controls = widgets.HBox(
            [
                widgets.VBox([self.table_box, self.group_box]),
                widgets.VBox([self.filter_column_box, self.filter_values_box]),
                widgets.VBox([self.measure_box, self.column_box]),
            ]
        )
        super().__init__(children=[controls, self.query_box, self.status_box, self.result_box])
        self.debounce = debounce
        self.table_box.observe(lambda c: self._from_box("table", c["new"]), "value")
        self.group_box.observe(lambda c: self._from_box("group_by", list(c["new"])), "value")
        self.filter_column_box.observe(lambda c: self._show_filter(), "value")
        self.filter_values_box.observe(lambda c: self._edit_filter(c["new"]), "value")
        self.measure_box.observe(lambda c: self._from_box("measure", c["new"]), "value")
        self.column_box.observe(lambda c: self._from_box("column", c["new"]), "value")
        self.table = table or names[0]

    @classmethod
    def of(cls, consortium: Consortium, table: str | None = None) -> CohortExplorer:
        """An explorer over the consortium's schema file (``schema.toml`` beside its consortium file)."""
        schema = load_schema_file(consortium.config.path.parent / "schema.toml")
        return cls(schema, consortium.query, table=table)

    # --- validation ------------------------------------------------------------------------------

    @traitlets.validate("table")
    def _known_table(self, proposal: dict[str, Any]) -> str:
        if proposal["value"] not in self.schema.tables:
            raise traitlets.TraitError(f"unknown table {proposal['value']!r}")
        return str(proposal["value"])

    @traitlets.validate("group_by")
    def _keys(self, proposal: dict[str, Any]) -> list[str]:
        keys = key_columns(self.schema.tables[self.table]) if self.table else []
        bad = [k for k in proposal["value"] if k not in keys]
        if bad:
            raise traitlets.TraitError(f"{bad} cannot be grouped by (keys of {self.table}: {keys})")
        return list(dict.fromkeys(proposal["value"]))

    @traitlets.validate("measure")
    def _known_measure(self, proposal: dict[str, Any]) -> str:
        if proposal["value"] not in MEASURES:
            raise traitlets.TraitError(f"unknown measure {proposal['value']!r}")
        return str(proposal["value"])

    @traitlets.validate("debounce")
    def _non_negative(self, proposal: dict[str, Any]) -> float:
        if proposal["value"] < 0:
            raise traitlets.TraitError("debounce must be >= 0 seconds")
        self._debouncer.delay = float(proposal["value"])
        return float(proposal["value"])

    # --- state changes ---------------------------------------------------------------------------

    def cohort_query(self) -> CohortQuery:
        """The current choices as a query (filters with no values kept are dropped)."""
        filters = {k: tuple(v) for k, v in self.filters.items() if v}
        column = None if self.measure == "count" else self.column
        return CohortQuery(self.table, tuple(self.group_by), filters, self.measure, column)

    @traitlets.observe("table")
    def _table_changed(self, change: dict[str, Any]) -> None:
        table = self.schema.tables[self.table]
        with self._hold():
            self.group_by = [k for k in self.group_by if k in key_columns(table)]
            self.filters = {k: v for k, v in self.filters.items() if k in key_columns(table)}
            self.table_box.value = self.table
            self.group_box.options = key_columns(table)
            self.group_box.value = tuple(self.group_by)
            self.filter_column_box.options = ["", *key_columns(table)]
            self._fit_column()
        self._changed()

    @traitlets.observe("measure")
    def _measure_changed(self, change: dict[str, Any]) -> None:
        with self._hold():
            self.measure_box.value = self.measure
            self._fit_column()
        self._changed()

    @traitlets.observe("group_by", "filters", "column")
    def _choice_changed(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        with self._hold():
            self.group_box.value = tuple(self.group_by)
            if self.column_box.options and self.column in self.column_box.options:
                self.column_box.value = self.column
            self._show_filter()
        self._changed()

    def _fit_column(self) -> None:
        """Offer the columns the measure applies to; keep the current one if it still fits."""
        options = measure_columns(self.schema.tables[self.table], self.measure)
        self.column_box.options = options
        self.column = self.column if self.column in options else (options[0] if options else None)
        self.column_box.value = self.column if options else None

    def _from_box(self, name: str, value: Any) -> None:
        if self._syncing or getattr(self, name) == value:
            return
        setattr(self, name, value)

    def _show_filter(self) -> None:
        column = self.filter_column_box.value
        domain = self.schema.tables[self.table].columns[column].domain if column else None
        with self._hold():
            self.filter_values_box.options = [(str(v), v) for v in domain or ()]
            self.filter_values_box.value = tuple(self.filters.get(column, ())) if column else ()

    def _edit_filter(self, values: tuple[Any, ...]) -> None:
        column = self.filter_column_box.value
        if self._syncing or not column:
            return
        kept = {k: v for k, v in self.filters.items() if k != column}
        self.filters = {**kept, column: list(values)} if values else kept

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        """While held, control-to-trait echoes are ignored (the controls are being set from the traits)."""
        was, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = was

    def _changed(self) -> None:
        """Rebuild the query text; schedule a run if the choices make a valid query."""
        if self._syncing:
            return
        query = self.cohort_query()
        try:
            query.check(self.schema)
        except ValueError as exc:
            self.error = str(exc)
            self._debouncer.cancel()
            self.status_box.value = f'<span style="color:#cf222e">{html.escape(self.error)}</span>'
            return
        self.set_trait("query_text", query.text())
        self.query_box.value = f"<pre>{html.escape(self.query_text)}</pre>"
        self.status_box.value = "waiting for changes to settle…"
        self._debouncer.trigger()

    @property
    def pending(self) -> bool:
        """Whether a run is scheduled (the debounce wait has not ended)."""
        return self._debouncer.pending

    def run_now(self) -> None:
        """Run the current query at once instead of after the debounce wait (choices set from code)."""
        self._debouncer.cancel()
        self._run()

    def _run(self) -> None:
        text = self.query_text
        self.status_box.value = "running…"
        self.runs += 1
        try:
            frame = self.runner(text)
        except Exception as exc:  # shown in the widget: the analyst keeps exploring
            self.error = f"{type(exc).__name__}: {exc}"
            self.status_box.value = f'<span style="color:#cf222e">{html.escape(self.error)}</span>'
            return
        if text != self.query_text:
            return  # the choices changed while it ran; the newer run will show its own answer
        self.error = ""
        self.result = frame
        suppressed = int(frame.map(_is_suppressed).to_numpy().sum())
        seconds = frame.attrs.get("seconds")
        took = f" in {seconds:.1f} s" if isinstance(seconds, float) else ""
        self.status_box.value = f"{len(frame)} rows{took}; {suppressed} cells suppressed (shown as &lt;k)"
        self.result_box.value = result_html(frame)
