"""One error hierarchy for the whole library.

::

    MpcError                    base of everything this library raises on purpose
    ├── EncodingError           a value cannot be represented (out of fixed-point range, NaN)
    ├── ProtocolError           the MPC protocol cannot go on
    │   ├── ProtocolViolation   a peer sent something malformed (size, dtype, order)
    │   └── Deadlock            no party can make progress (a bug in a protocol)
    └── ConfigError             a configuration or key file is invalid

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


class ConfigError(MpcError):
    """A configuration, policy or key file is invalid."""
