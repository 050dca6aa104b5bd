"""One error hierarchy for the whole library.

::

    MpcError                    base of everything this library raises on purpose
    ├── EncodingError           a value cannot be represented (out of fixed-point range, NaN)
    ├── ProtocolError           the MPC protocol cannot go on
    │   ├── ProtocolViolation   a peer sent something malformed (size, dtype, order)
    │   ├── Deadlock            no party can make progress (a bug in a protocol)
    │   └── PeerFailure         a named peer went silent, disconnected or reported an error
    │       ├── PeerTimeout     no message from the peer within the timeout
    │       └── PeerDisconnected  the peer's connection closed or it aborted the session
    ├── ConfigError             a configuration or key file is invalid
    ├── AuthError               an identity, signature or query envelope is not accepted
    │   ├── BadSignature        an Ed25519 signature does not verify
    │   ├── StaleEnvelope       an envelope is too old or dated in the future
    │   └── ReplayedEnvelope    an envelope's nonce was already seen
    ├── PolicyRefusal           a site's disclosure policy refuses the request (names site and rule)
    └── AuditError              the audit log cannot be appended to safely

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


class AuditError(MpcError):
    """The audit log cannot be appended to safely (for example, its last entry is damaged)."""
