"""One error hierarchy for the whole library.

::

    MpcError                    base of everything this library raises on purpose
    ├── EncodingError           a value cannot be represented (out of fixed-point range, NaN)
    ├── ProtocolError           the MPC protocol cannot go on
    │   ├── ProtocolViolation   a peer sent something malformed (size, dtype, order)
    │   ├── Deadlock            no party can make progress (a bug in a protocol)
    │   ├── PeerFailure         a named peer went silent, disconnected or reported an error
    │   │   ├── PeerTimeout     no message from the peer within the timeout
    │   │   └── PeerDisconnected  the peer's connection closed or it aborted the session
    │   ├── QueryRefused        a committee member refused the query in the agreement round
    │   └── PlanMismatch        members compiled different plans; nothing was shared
    ├── ConfigError             a configuration or key file is invalid
    ├── AuthError               an identity, signature or query envelope is not accepted
    │   ├── BadSignature        an Ed25519 signature does not verify
    │   ├── StaleEnvelope       an envelope is too old or dated in the future
    │   └── ReplayedEnvelope    an envelope's nonce was already seen
    ├── PolicyRefusal           a site's disclosure policy refuses the request (names site and rule)
    │   └── ModelRefused        a model's disclosure rule failed on the pooled shares (names the rule)
    ├── QueryError              a %%mpc query cannot be compiled (carries line and column)
    │   ├── QuerySyntaxError    the text does not parse
    │   ├── UnknownName         a table or column does not exist (suggests the closest names)
    │   └── UnsupportedQuery    a construct outside the language, named precisely
    ├── LocalStepError          the local step failed at some site (names none; same at every member)
    ├── AuditError              the audit log cannot be appended to safely
    └── ReviewError             a held result cannot be shown or decided (unknown id, already decided)

The notebook side turns these into one-line ``UsageError`` messages for analysts.
"""


class MpcError(Exception):
    """Base class of every error this library raises on purpose."""


class EncodingError(MpcError, ValueError):
    """A value cannot be encoded in the ring (out of range, NaN or infinite)."""


class ProtocolError(MpcError):
    """The MPC protocol cannot continue."""


class ProtocolViolation(ProtocolError):
    """A peer sent a message that does not match what the protocol expects."""


class Deadlock(ProtocolError):
    """No party can make progress: every one waits for a message nobody sends."""


class PeerFailure(ProtocolError):
    """A named peer stopped taking part; ``peer`` is its committee index or name."""

    def __init__(self, peer: int | str, message: str) -> None:
        super().__init__(message)
        self.peer = peer


class PeerTimeout(PeerFailure):
    """No message from the peer within the timeout."""


class PeerDisconnected(PeerFailure):
    """The peer's connection closed, or the peer aborted the session and said why."""


class ConfigError(MpcError):
    """A configuration, policy or key file is invalid."""


class AuthError(MpcError):
    """An identity, signature or signed query envelope is not accepted."""


class BadSignature(AuthError):
    """An Ed25519 signature does not verify against the expected public key."""


class StaleEnvelope(AuthError):
    """A query envelope's timestamp is older than allowed or lies in the future."""


class ReplayedEnvelope(AuthError):
    """A query envelope's nonce was already accepted once."""


class PolicyRefusal(MpcError):
    """A site's disclosure policy refuses a request.

    ``site`` names the refusing site and ``rule`` the policy key that refused, so the
    analyst's one-line message can say exactly who said no and why.
    """

    def __init__(self, site: str, rule: str, message: str) -> None:
        super().__init__(f"site {site!r} refused ({rule}): {message}")
        self.site = site
        self.rule = rule
        self.message = message


class ModelRefused(PolicyRefusal):
    """A model's disclosure rule failed, decided on the pooled shares inside the session
    (``site_agent.privacy.models``): every member raises it alike after the session; it names
    the rule and no site (the decision is the consortium's, on pooled data)."""

    def __init__(self, rule: str, message: str) -> None:
        MpcError.__init__(self, f"refused by the model rule {rule}: {message}; nothing was released")
        self.site = "consortium"
        self.rule = rule
        self.message = message


class AuditError(MpcError):
    """The audit log cannot be appended to safely (for example, its last entry is damaged)."""


class ReviewError(MpcError):
    """A result held for output review cannot be shown or decided: no such id, an ambiguous id,
    a decision already taken, or a site that is not asked to review it."""


class QueryError(MpcError):
    """A %%mpc query cannot be compiled.

    ``line`` and ``column`` (1-based) locate the offending text when known; ``text`` is the
    query, so :meth:`pointer` can draw the line with a caret under the column.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None, text: str = "") -> None:
        where = f" (line {line}, column {column})" if line is not None and column is not None else ""
        super().__init__(f"{message}{where}")
        self.message = message
        self.line = line
        self.column = column
        self.text = text

    def pointer(self) -> str:
        """The offending source line with a caret under the column, or '' when unknown."""
        if self.line is None or self.column is None or not self.text:
            return ""
        lines = self.text.splitlines() or [""]
        src = lines[min(self.line, len(lines)) - 1]
        return f"{src}\n{' ' * (self.column - 1)}^"

    def __str__(self) -> str:
        base = super().__str__()
        ptr = self.pointer()
        return f"{base}\n{ptr}" if ptr else base


class QuerySyntaxError(QueryError):
    """The query text does not parse."""


class UnknownName(QueryError):
    """A table or column is not in the schema; ``suggestions`` holds the closest valid names."""

    def __init__(
        self, message: str, suggestions: list[str], line: int | None = None, column: int | None = None, text: str = ""
    ) -> None:
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(message + hint, line, column, text)
        self.suggestions = suggestions


class UnsupportedQuery(QueryError):
    """The query uses a construct outside the %%mpc language (the message names it)."""


class QueryRefused(ProtocolError):
    """A committee member refused the query in the agreement round (``site`` names it)."""

    def __init__(self, site: str, message: str) -> None:
        super().__init__(message)
        self.site = site


class PlanMismatch(ProtocolError):
    """Committee members compiled different plans for the same envelope; nothing was shared."""


class LocalStepError(MpcError):
    """The local step failed at some site; every committee member raises this one alike.

    A failure that depends on a site's data would otherwise be an oracle (the record exists,
    and where), so the committee learns only that some site failed (the plan's ``local_failed``
    reveal point, see ``site_agent.query.failsafe``): the message names no site, quotes no
    engine text and no value, and is the same at every member and in every audit log.
    """

    MESSAGE = "the local step failed at a site; nothing was released"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)
