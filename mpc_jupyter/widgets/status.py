"""Consortium status: each committee member online or not, latency, policy digest, exposed tables."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import traitlets

from ..client import Consortium, SiteStatus

StatusSource = Callable[[], list[SiteStatus]]


def _tables(status: SiteStatus) -> str:
    return ", ".join(html.escape(name) for name in sorted(status.tables))


def status_table_html(statuses: list[SiteStatus]) -> str:
    """The status rows as an HTML table (digests shortened, full digest in the tooltip)."""
    rows = []
    for s in statuses:
        state = (
            '<span style="color:#1a7f37">● online</span>'
            if s.online
            else '<span style="color:#cf222e">○ offline</span>'
        )
        latency = f"{s.latency_ms:.0f} ms" if s.latency_ms is not None else "–"
        digest = f'<code title="{html.escape(s.policy_digest)}">{html.escape(s.policy_digest[:12])}</code>'
        detail = _tables(s) if s.online else html.escape(s.error)
        rows.append(
            f"<tr><td><b>{html.escape(s.site)}</b></td><td>{state}</td><td>{latency}</td>"
            f"<td>{digest if s.policy_digest else '–'}</td><td>{detail}</td></tr>"
        )
    head = "<tr><th>site</th><th>state</th><th>latency</th><th>policy digest</th><th>tables</th></tr>"
    return f'<table class="mpc-status">{head}{"".join(rows)}</table>'


class ConsortiumStatus(widgets.VBox):  # type: ignore[misc]
    """Per-site status of a consortium with a refresh button.

    ``ConsortiumStatus(consortium.status)`` (or ``ConsortiumStatus.of(consortium)``) asks the
    committee once; ``refresh()`` or the button asks again. ``statuses`` holds the answers.
    """

    statuses = traitlets.List(trait=traitlets.Instance(SiteStatus), help="one entry per committee member")
    refreshed_at = traitlets.Float(0.0, help="time.time() of the last refresh")
    error = traitlets.Unicode("", help="why the last refresh failed, if it did")

    def __init__(self, source: StatusSource, refresh: bool = True, **kwargs: Any) -> None:
        self.source = source
        self.button = widgets.Button(description="Refresh", icon="refresh", tooltip="ask every site again")
        self.summary = widgets.HTML()
        self.table = widgets.HTML()
        self.button.on_click(lambda _: self.refresh())
        super().__init__(children=[widgets.HBox([self.button, self.summary]), self.table], **kwargs)
        if refresh:
            self.refresh()

    @classmethod
    def of(cls, consortium: Consortium) -> ConsortiumStatus:
        """The status widget of a connected consortium."""
        return cls(consortium.status)

    @traitlets.validate("statuses")
    def _unique_sites(self, proposal: dict[str, Any]) -> list[SiteStatus]:
        names = [s.site for s in proposal["value"]]
        if len(set(names)) != len(names):
            raise traitlets.TraitError(f"a site appears twice in {names}")
        return list(proposal["value"])

    def refresh(self) -> None:
        """Ask every site for its status now."""
        self.button.disabled = True
        try:
            self.statuses = self.source()
            self.error = ""
        except Exception as exc:  # shown in the widget: a notebook display must not raise
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.refreshed_at = time.time()
            self.button.disabled = False

    @property
    def all_online(self) -> bool:
        """Whether every member answered."""
        return bool(self.statuses) and all(s.online for s in self.statuses)

    @traitlets.observe("statuses", "error", "refreshed_at")
    def _render(self, change: dict[str, Any]) -> None:
        online = sum(s.online for s in self.statuses)
        when = time.strftime("%H:%M:%S", time.localtime(self.refreshed_at)) if self.refreshed_at else "never"
        text = f"{online} of {len(self.statuses)} sites online, checked {when}"
        if self.error:
            text = f'<span style="color:#cf222e">{html.escape(self.error)}</span>'
        self.summary.value = text
        self.table.value = status_table_html(self.statuses)
