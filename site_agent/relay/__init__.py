"""The relay: members that accept no inbound connection reach each other through it.

Hospital firewalls rarely let other institutions in. A relayed agent dials out to the relay and
keeps a *registration* open there; whoever wants to reach it (a committee peer, an analyst)
dials the relay too and asks for a *tunnel* to it by name. The relay pairs the two websockets
and copies their binary messages from one to the other, nothing else.

The members' own mutual-TLS 1.3 sessions run end to end *inside* the tunnels: the bytes a tunnel
carries are the TLS records of the session between the two members, so the relay sees
ciphertext, sizes and timing, never a share, a query or a result, and cannot change, drop,
replay or reorder a record without the receiving TLS stack failing the connection (AEAD
record protection with implicit sequence numbers, RFC 8446 section 5). A relay that
misbehaves therefore makes queries fail like a lost link -- never wrong.

Modules, in dependency order:

* :mod:`.config` -- ``relay.toml``: where the relay listens, its TLS files, the consortium file.
* :mod:`.tunnel` -- the members' side: open a tunnel to a name (a local socket that websockets
  runs TLS over), and keep a registration that forwards incoming tunnels to the local server.
* :mod:`.server` -- the relay itself (``mpc-relay serve``).
"""
