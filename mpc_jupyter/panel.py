"""Kernel side of the "MPC consortium" side panel in JupyterLab.

The JupyterLab extension (``labextension/``) shows the consortium, its sites and
the recent queries of the notebook in focus. The kernel feeds it over a Jupyter
comm with target :data:`COMM_TARGET`; docs/labextension.md specifies the messages:

- kernel -> frontend, in the ``comm_open`` data and in each later ``comm_msg``::

      {"type": "state",
       "consortium": {...},
       "sites": [{"name", "address", "online", "latency_ms", "policy_digest", "tables"}],
       "queries": [{"id", "text", "seconds", "sites", "receipts", "reveals", "suppressed"}]}

- frontend -> kernel: ``{"type": "request_state"}`` asks for the latest state again
  (a reloaded page re-attaches to the open comm and sends it).

Without a frontend (plain ``python``, a test, ``nbclient``) the ``comm`` package
hands out a comm that sends nothing, so :class:`PanelPublisher` is always safe
to use.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import comm

__all__ = ["COMM_TARGET", "PanelPublisher", "state_message"]

COMM_TARGET = "mpc_jupyter.panel"
"""Comm target name shared with the JupyterLab extension."""

_log = logging.getLogger(__name__)

_SITE_DEFAULTS: dict[str, Any] = {
    "address": None,
    "online": False,
    "latency_ms": None,
    "policy_digest": None,
    "tables": [],
}
_QUERY_DEFAULTS: dict[str, Any] = {
    "text": "",
    "seconds": None,
    "sites": [],
    "receipts": [],
    "reveals": [],
    "suppressed": 0,
}


def _json_default(value: Any) -> Any:
    """Encode what analysis code commonly hands over: numpy scalars, sets, bytes, dates."""
    if hasattr(value, "item") and callable(value.item):  # numpy scalar or 0-d array
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy array
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, _dt.date | _dt.datetime):
        return value.isoformat()
    return str(value)


def _jsonable(value: Any) -> Any:
    """A deep copy of ``value`` made of JSON types only."""
    return json.loads(json.dumps(value, default=_json_default))


def state_message(state: Mapping[str, Any], *, max_queries: int = 20) -> dict[str, Any]:
    """Build the ``state`` message from ``{"consortium", "sites", "queries"}``.

    Missing fields get their defaults, extra fields pass through, values are made
    JSON-safe, and only the last ``max_queries`` queries are kept (oldest first).
    """
    consortium = dict(state.get("consortium") or {})
    sites = []
    for site in state.get("sites") or []:
        if "name" not in site:
            raise ValueError(f"site without a name: {site!r}")
        sites.append({"name": site["name"], **_SITE_DEFAULTS, **site})
    recent = list(state.get("queries") or [])
    recent = recent[-max_queries:] if max_queries > 0 else []
    queries = []
    for query in recent:
        if "id" not in query:
            raise ValueError(f"query without an id: {query!r}")
        rest = {key: value for key, value in query.items() if key != "id"}
        queries.append({"id": str(query["id"]), **_QUERY_DEFAULTS, **rest})
    message: dict[str, Any] = _jsonable({"type": "state", "consortium": consortium, "sites": sites, "queries": queries})
    return message


CommFactory = Callable[..., Any]


class PanelPublisher:
    """Publish the consortium state to the JupyterLab side panel.

    The comm is opened on the first :meth:`publish` (its open message carries the
    state) and re-opened if the frontend closed it. The latest state is kept and
    sent again when the frontend asks with ``{"type": "request_state"}``.

    ``comm_factory`` defaults to ``comm.create_comm`` looked up at call time, so
    the kernel's implementation (installed by ipykernel at start-up) is used.
    """

    def __init__(self, *, comm_factory: CommFactory | None = None, max_queries: int = 20) -> None:
        self._comm_factory = comm_factory
        self.max_queries = max_queries
        self._comm: Any = None
        self._latest: dict[str, Any] | None = None
        self._disabled = False

    @property
    def latest(self) -> dict[str, Any] | None:
        """The last state message published, or None."""
        return self._latest

    @property
    def is_open(self) -> bool:
        return self._comm is not None

    def publish(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Send ``state`` to the panel; returns the message sent."""
        message = state_message(state, max_queries=self.max_queries)
        self._latest = message
        if self._disabled:
            return message
        try:
            if self._comm is None:
                self._open(message)
            else:
                self._comm.send(message)
        except Exception as exc:  # no kernel, no session: the panel is optional
            _log.debug("panel comm unavailable, state not sent: %s", exc)
            self._comm = None
            self._disabled = True
        return message

    def close(self) -> None:
        """Close the comm (the panel keeps showing the last state)."""
        if self._comm is not None:
            active, self._comm = self._comm, None
            active.close()

    def _open(self, message: dict[str, Any]) -> None:
        factory = self._comm_factory or comm.create_comm
        opened = factory(target_name=COMM_TARGET, data=message)
        opened.on_msg(self._on_msg)
        opened.on_close(self._on_close)
        self._comm = opened

    def _on_msg(self, msg: Mapping[str, Any]) -> None:
        data = msg.get("content", {}).get("data", {})
        wanted = isinstance(data, Mapping) and data.get("type") == "request_state"
        if wanted and self._latest is not None and self._comm is not None:
            self._comm.send(self._latest)

    def _on_close(self, msg: Mapping[str, Any]) -> None:
        # The frontend closed the comm (no panel there, or the page went away): reopen on next publish.
        self._comm = None
