"""The notebook's error layer: every library error becomes one ``UsageError`` line.

Analysts run queries, not Python: a traceback through websockets and the MPC engine tells
them nothing. :func:`usage_error` is the one translation, from the typed hierarchy of
``site_agent.errors`` (drawn there) and the client's ``QueryFailed``/``SiteUnavailable``,
to a message that names what to fix: the line and column of a syntax error (with the line
and a caret under it), the site and rule of a policy refusal, the site that is down or went
silent, a timeout and the setting that controls it. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from IPython.core.error import UsageError

from site_agent.agent.messages import PHASES
from site_agent.errors import (
    AuthError,
    ConfigError,
    MpcError,
    PeerFailure,
    PeerTimeout,
    PolicyRefusal,
    QueryError,
    QueryRefused,
)

from .client import QueryFailed, SiteUnavailable
from .connections import NotConnected
from .params import BindError

TRANSLATED = (MpcError, NotConnected, BindError)
"""The errors :func:`usage_error` turns into a ``UsageError``."""

_REFUSED_PREFIX = re.compile(r"\Asite '[^']*' refused \([^)]*\):\s*")
_TIMEOUT = re.compile(r"did not answer within|timed out|timeout", re.IGNORECASE)


def usage_error(exc: Exception, phases: Mapping[str, str] | None = None) -> UsageError:
    """One analyst-facing message for ``exc`` (a ``TRANSLATED`` error).

    ``phases`` (site -> last phase it reported, ``""`` for none) lets a timeout name the site
    that went silent: the client only knows who has not answered, and while one member is
    silent the other two wait for it too.
    """
    if isinstance(exc, SiteUnavailable) and _TIMEOUT.search(str(exc)) and phases:
        return UsageError(_timeout(exc, phases))
    return UsageError(_message(exc))


def _timeout(exc: SiteUnavailable, phases: Mapping[str, str]) -> str:
    rank = {site: PHASES.index(p) if p in PHASES else -1 for site, p in phases.items()}
    lowest = min(rank.values())
    silent = [site for site, r in rank.items() if r == lowest]
    heard = ", ".join(f"{site}: {phase or 'nothing'}" for site, phase in phases.items())
    who = f"site {silent[0]} went silent" if len(silent) == 1 else f"sites {', '.join(silent)} went silent"
    return f"mpc: timeout: {who} ({exc}; last heard: {heard}) (raise %config MpcMagic.timeout = SECONDS)"


def _message(exc: Exception) -> str:
    if isinstance(exc, NotConnected):
        return f"mpc: {exc}"
    if isinstance(exc, BindError):
        return f"mpc: cannot bind a parameter: {exc}"
    if isinstance(exc, QueryFailed):
        return _failure(exc)
    if isinstance(exc, SiteUnavailable):
        if _TIMEOUT.search(str(exc)):
            return f"mpc: timeout: {exc} (raise %config MpcMagic.timeout = SECONDS)"
        return f"mpc: site {exc.site} is down: {exc}"
    if isinstance(exc, PolicyRefusal):
        return f"mpc: refused by site {exc.site}, rule {exc.rule}: {exc.message}"
    if isinstance(exc, QueryError):
        return f"mpc: {exc}"
    if isinstance(exc, PeerTimeout):
        return f"mpc: timeout: site {exc.peer} went silent: {exc}"
    if isinstance(exc, PeerFailure):
        return f"mpc: site {exc.peer} failed: {exc}"
    if isinstance(exc, QueryRefused):
        return f"mpc: site {exc.site} refused the query: {exc}"
    if isinstance(exc, AuthError):
        return f"mpc: not authorised: {exc}"
    if isinstance(exc, ConfigError):
        return f"mpc: configuration: {exc}"
    return f"mpc: {exc}"


def _failure(exc: QueryFailed) -> str:
    """A site's refusal or failure, as the site reported it (category, rule, message)."""
    text = str(exc)
    if exc.category == "policy":
        return f"mpc: refused by site {exc.site}, rule {exc.rule}: {_REFUSED_PREFIX.sub('', text)}"
    if exc.category == "query":
        return f"mpc: site {exc.site} cannot compile the query: {text}"
    if exc.category == "auth":
        return f"mpc: not authorised by site {exc.site}: {text}"
    if exc.category == "refused":
        return f"mpc: site {exc.site} refused the query: {text}"
    if exc.category == "local":
        return f"mpc: {text}"  # the same at every site: it names none
    if exc.category == "peer":
        if _TIMEOUT.search(text):
            return f"mpc: timeout: site {exc.site} went silent: {text}"
        return f"mpc: site {exc.site} is down or left the computation: {text}"
    return f"mpc: site {exc.site} could not answer: {text}"
