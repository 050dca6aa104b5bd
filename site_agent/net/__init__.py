"""The engine's network transport: binary frames over mutually authenticated TLS websockets.

Modules: ``framing`` (wire format), ``mpc_transport`` (drive a sans-I/O party over links),
``session`` (per-session PRF keys), ``mesh`` (the committee's connections, a per-session
dispatcher and pluggable handlers for the daemon), ``loopback`` (run a member as a process,
for tests and benchmarks). All sockets of the project live in this package.
"""
