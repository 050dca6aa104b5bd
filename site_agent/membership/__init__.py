"""Membership of a running consortium: who may connect, and how that changes.

In dependency order:

* :mod:`.changes` -- the digest of a consortium version, site signatures over it, and the rule
  that decides whether a new version replaces the current one (t of n sites approved it and it
  names the current version as its predecessor). Pure: configurations in, a verdict out.
* :mod:`.identity` -- whether a certificate (common name and fingerprint) may connect under a
  version: registered, revoked (and why), or unknown. Pure.
* :mod:`.watch` -- the agent's side: polls the consortium file and hands each approved new
  version to the daemon, which applies it without a restart; anything else is ignored with a
  log line.
"""
