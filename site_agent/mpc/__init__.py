"""The MPC engine: three-party replicated secret sharing over Z_2^64, sans I/O.

Modules in dependency order (read top-down): ``ring``, ``fixed``, ``randomness``,
``shares``, ``sharing``, ``party``, ``arithmetic``, ``boolean``, then the protocols built on
them. See README.md in this folder.
"""
