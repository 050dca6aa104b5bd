"""The ``%mpc`` / ``%%mpc`` magics: wiring only.

:mod:`mpc_jupyter.command` parses, :mod:`mpc_jupyter.params` binds notebook variables,
:mod:`mpc_jupyter.connections` holds the connection, :mod:`mpc_jupyter.results`,
:mod:`mpc_jupyter.charts` and :mod:`mpc_jupyter.teaching` display, and
:mod:`mpc_jupyter.errors` turns every library error into one ``UsageError`` line.
Settings are traits: ``%config MpcMagic`` lists them, ``%config MpcMagic.timeout = 60``
sets one.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope, no_var_expand
from IPython.core.pylabtools import print_figure
from IPython.display import display
from matplotlib.figure import Figure
from traitlets import Enum, Float, Int, Tuple, observe

from . import command as cmd
from .charts import DEFAULT_FIGSIZE, KINDS, plot
from .client import ResultPending
from .connections import ConnectionManager
from .errors import TRANSLATED, usage_error
from .params import bind
from .results import MpcResult, as_result, receipts
from .teaching import Explanation, SharesView
from .widgets.progress import QueryProgress


@magics_class
class MpcMagic(Magics):
    """Run privacy-preserving queries across a consortium's sites from a notebook."""

    timeout = Float(30.0, help="Seconds to wait for the committee before a query fails with a timeout.").tag(
        config=True
    )
    display_limit = Int(60, help="Rows of a result shown in the notebook (the DataFrame keeps all).").tag(config=True)
    chart_kind = Enum(KINDS, default_value="auto", help="Chart drawn by --plot without a KIND.").tag(config=True)
    chart_size = Tuple(
        Float(), Float(), default_value=DEFAULT_FIGSIZE, help="Chart size in inches (width, height)."
    ).tag(config=True)
    progress_threshold = Float(2.0, help="Seconds a query runs before a progress display shows each site's phase.").tag(
        config=True
    )

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.manager = ConnectionManager()
        MpcResult.display_limit = self.display_limit

    @observe("display_limit")
    def _display_limit_changed(self, change: dict[str, Any]) -> None:
        MpcResult.display_limit = change["new"]

    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def mpc(self, line: str, cell: str | None = None, local_ns: dict[str, Any] | None = None) -> Any:
        """Query a consortium under secure multi-party computation.

        %mpc connect PATH [--analyst NAME]   connect to the consortium file PATH
        %mpc status                          the committee's sites
        %mpc budget                          this analyst's DP budget at each site
        %mpc receipts [NAME]                 the signed receipts of a result
        %mpc plan [NAME]                     the plan of a result, explained
        %mpc pending                         fetch results released after output review
        %mpc close                           disconnect
        %%mpc [--out NAME] [--plot [KIND]] [--explain] [--shares] [--dp] [--epsilon E]
        [NAME <<] SELECT ...

        {name} and :name in a query are bound from the notebook as SQL literals.
        """
        try:
            return self._dispatch(cmd.parse(line, cell), {**self._user_ns, **(local_ns or {})})
        except TRANSLATED as exc:
            raise usage_error(exc) from None

    @property
    def _user_ns(self) -> dict[str, Any]:
        if self.shell is None:
            raise RuntimeError("MpcMagic needs an IPython shell")
        user_ns: dict[str, Any] = self.shell.user_ns
        return user_ns

    def _dispatch(self, command: cmd.Command, namespace: dict[str, Any]) -> Any:
        match command:
            case cmd.Connect(path, analyst):
                consortium = self.manager.connect(path, analyst, self.timeout)
                print(f"connected to {consortium.config.name} as {consortium.analyst}")
                return self._status_table()
            case cmd.Status():
                self.manager.refresh()
                return self._status_table()
            case cmd.Budget():
                return self.manager.consortium.budget()
            case cmd.Receipts(name):
                return receipts(self._stored(name, namespace))
            case cmd.PlanOf(name):
                stored = self._stored(name, namespace)
                if "query" not in stored.attrs:
                    raise UsageError("mpc: this result does not record its query text")
                epsilon = stored.attrs.get("epsilon")  # a DP result: explain the DP plan it ran
                return Explanation(str(self.manager.consortium.explain(stored.attrs["query"], epsilon=epsilon)))
            case cmd.Close():
                self.manager.close()
                return None
            case cmd.Pending():
                return self._pending()
            case cmd.Query():
                return self._query(command, namespace)

    def _query(self, command: cmd.Query, namespace: dict[str, Any]) -> Any:
        consortium = self.manager.consortium
        text, params = bind(command.sql, namespace)
        if command.explain:
            explained = consortium.explain(text, params, epsilon=command.epsilon, dp=command.dp)
            return self._keep(command, Explanation(str(explained)))
        consortium.timeout = self.timeout
        progress = QueryProgress(consortium.committee, threshold=self.progress_threshold)
        progress.observe(lambda change: change["new"] and display(progress), "shown")  # type: ignore[no-untyped-call]
        progress.start()
        try:
            frame = consortium.query(text, params, progress=progress, epsilon=command.epsilon, dp=command.dp)
        except ResultPending as exc:  # not an error: the reviewing sites' DPOs decide later
            progress.finish()
            print(exc)
            return None
        except TRANSLATED as exc:
            progress.finish(error=type(exc).__name__)
            raise usage_error(exc, {site: progress.phases.get(site, "") for site in consortium.committee}) from None
        progress.finish()
        result = as_result(frame, query=text, params=params, policy_digests=self.manager.policy_digests())
        self.manager.record(result)
        shown = self._keep(command, result)
        if command.shares and shown is not None:
            shown = SharesView(result)
        if not command.plot:
            return shown
        if shown is not None:
            display(shown)  # type: ignore[no-untyped-call]
        kind = self.chart_kind if command.plot == "default" else command.plot
        return plot(result, kind=kind, figsize=self.chart_size)

    def _pending(self) -> MpcResult | None:
        """Fetch results released after review (each shown), one line per result still waiting
        or discarded."""
        outcome = self.manager.consortium.pending()
        results = []
        for frame in outcome.released:
            result = as_result(
                frame, query=frame.attrs["query"], params={}, policy_digests=self.manager.policy_digests()
            )
            self.manager.record(result)
            results.append(result)
        for query_id, sites in outcome.waiting.items():
            print(f"pending review at site {', '.join(sites)}: {query_id[:16]} {outcome.queries[query_id]!r}")
        for query_id, why in outcome.discarded.items():
            print(f"not released ({why}): {query_id[:16]} {outcome.queries[query_id]!r}")
        if not results:
            if not outcome.waiting and not outcome.discarded:
                print("no results held for review")
            return None
        for result in results[:-1]:
            display(result)  # type: ignore[no-untyped-call]
        return results[-1]  # the last one is the cell's output

    def _keep(self, command: cmd.Query, value: Any) -> Any:
        """Store ``value`` as asked; what the cell shows (nothing after ``NAME <<``)."""
        for name in (command.store, command.out):
            if name is not None:
                self._user_ns[name] = value
        return None if command.store is not None else value

    def _stored(self, name: str | None, namespace: dict[str, Any]) -> pd.DataFrame:
        if name is None:
            if not self.manager.results:
                raise UsageError("mpc: no result yet in this session")
            return self.manager.results[-1]
        value = namespace.get(name)
        if not isinstance(value, pd.DataFrame) or "receipts" not in value.attrs:
            raise UsageError(f"mpc: {name!r} is not a query result")
        return value

    def _status_table(self) -> pd.DataFrame:
        rows = [
            {
                "site": s.site,
                "online": s.online,
                "latency_ms": None if s.latency_ms is None else round(s.latency_ms, 1),
                "policy": s.policy_digest[:12],
                "tables": ", ".join(sorted(s.tables)),
                "error": s.error,
            }
            for s in self.manager.sites
        ]
        return pd.DataFrame(rows).set_index("site")


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG, for the notebook's display of chart results."""
    data: bytes = print_figure(figure, fmt="png", bbox_inches="tight")  # type: ignore[no-untyped-call]
    return data
