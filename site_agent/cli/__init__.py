"""Command-line tools of the site side.

``consortium`` is ``mpc-consortium`` (consortium, site and analyst setup). Commands stay thin:
the work is done by library functions (``config``, ``crypto``, ``policy``, ``audit``) that the
agent daemon and tests call directly.
"""
