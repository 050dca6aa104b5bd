"""The notebook's connection to a consortium, and what it last learnt about the sites.

One :class:`ConnectionManager` per IPython session (the magics own it). It holds the open
:class:`~mpc_jupyter.client.Consortium`, the last ``status()`` answer (the receipt line
shows the sites' policy digests from it) and the results of this session, and it is the one
place that feeds the JupyterLab side panel (:mod:`mpc_jupyter.panel`, messages in
docs/labextension.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .client import Consortium, SiteStatus
from .panel import PanelPublisher


class NotConnected(Exception):
    """A query or status request before ``%mpc connect``."""


class ConnectionManager:
    """The open consortium of a notebook session, its last status and its results."""

    def __init__(self, publisher: PanelPublisher | None = None) -> None:
        self._consortium: Consortium | None = None
        self.sites: list[SiteStatus] = []
        self.results: list[pd.DataFrame] = []
        self.publisher = publisher or PanelPublisher()

    @property
    def consortium(self) -> Consortium:
        """The open consortium; ``NotConnected`` before ``%mpc connect``."""
        if self._consortium is None:
            raise NotConnected("not connected: run %mpc connect <consortium.toml> first")
        return self._consortium

    def connect(self, path: str | Path | None, analyst: str | None, timeout: float) -> Consortium:
        """Open ``path`` as ``analyst`` (closing any previous connection) and ask for status."""
        consortium = Consortium.connect(Path(path).expanduser() if path else None, analyst=analyst, timeout=timeout)
        self.close()
        self._consortium = consortium
        self.refresh()
        return consortium

    def refresh(self) -> list[SiteStatus]:
        """Ask every committee member for its status; keep it and update the side panel."""
        self.sites = self.consortium.status()
        self.publish()
        return self.sites

    def record(self, result: pd.DataFrame) -> None:
        """Keep a result of this session and show it in the side panel."""
        self.results.append(result)
        self.publish()

    def policy_digests(self) -> dict[str, str]:
        """Each online site's policy digest, as last seen by ``status``."""
        return {s.site: s.policy_digest for s in self.sites if s.online}

    def close(self) -> None:
        """Close the connection, if any."""
        if self._consortium is not None:
            self._consortium.close()
            self._consortium = None
            self.sites = []

    def publish(self) -> None:
        """Send the side panel the consortium, its sites and this session's queries."""
        if self._consortium is None:
            return
        config = self._consortium.config
        self.publisher.publish(
            {
                "consortium": {
                    "name": config.name,
                    "id": config.id,
                    "analyst": self._consortium.analyst,
                    "committee": ", ".join(self._consortium.committee),
                    "policy": _policy_state(self.sites),
                },
                "sites": [_site_state(s, str(config.site(s.site).address)) for s in self.sites],
                "queries": [_query_state(i, r) for i, r in enumerate(self.results)],
            }
        )


def _policy_state(sites: list[SiteStatus]) -> dict[str, str]:
    """The policy digests the sites last reported: one row when they agree, else one per site.

    Each site enforces the strictest combination of all members' policies; the digests
    say which policy files are in force (the receipts commit to the combination).
    """
    digests = {s.site: s.policy_digest for s in sites if s.online and s.policy_digest}
    if not digests:
        return {}
    distinct = set(digests.values())
    if len(distinct) == 1:
        return {"digest": distinct.pop()[:16], "same at": f"{len(digests)}/{len(sites)} sites"}
    return {f"digest at {site}": digest[:16] for site, digest in digests.items()}


def _site_state(status: SiteStatus, address: str) -> dict[str, Any]:
    return {
        "name": status.site,
        "address": address,
        "online": status.online,
        "latency_ms": status.latency_ms,
        "policy_digest": status.policy_digest or None,
        "tables": sorted(status.tables),
    }


def _reveal_state(reveal: dict[str, Any], result: pd.DataFrame) -> dict[str, Any]:
    """A reveal point in the analyst's words: the result column it feeds, what it is, and how
    many cells were opened (suppressed cells never are)."""
    if reveal.get("encoding") == "flags":
        return {"name": "suppression flags (one per cell, opened to the committee)", "cells": len(result)}
    column = str(reveal["name"]).split(":", 1)[0]
    opened = result.attrs.get("opened", {}).get(column)  # HAVING and LIMIT hide rows, not reveals
    if opened is None:
        flags = result.attrs.get("suppressed", {}).get(column)
        opened = len(result) - sum(flags) if flags is not None else len(result)
    return {"name": f"{column}: {reveal.get('what', reveal['name'])}", "cells": opened}


def _query_state(index: int, result: pd.DataFrame) -> dict[str, Any]:
    attrs = result.attrs
    suppressed = sum(sum(flags) for flags in attrs.get("suppressed", {}).values())
    return {
        "id": attrs.get("plan_digest", "")[:16] + f"-{index}",
        "text": attrs.get("query", ""),
        "seconds": attrs.get("seconds"),
        "sites": attrs.get("sites", []),
        "receipts": [{"site": r["site"], "digest": r["hash"], "seq": r["seq"]} for r in attrs.get("receipts", [])],
        "reveals": [_reveal_state(r, result) for r in (attrs.get("plan") or {}).get("reveals", [])],
        "suppressed": suppressed,
    }
