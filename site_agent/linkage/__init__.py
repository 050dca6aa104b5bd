"""Privacy-preserving record linkage (docs/linkage.md).

Modules in dependency order: :mod:`identifiers` (the declared identifier, normalised alike at
every site), :mod:`oprf` (linkage keys from a PRF whose key the committee shares), :mod:`dedup`
(distinct persons and persons per number of sites, on shares). This package imports the MPC
engine and the release rule, never the network or the agent.
"""
