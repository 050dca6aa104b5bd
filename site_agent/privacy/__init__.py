"""What may be released: the one home of the release rule (docs/privacy.md).

Modules in dependency order: :mod:`contributions` (what one row adds to a released number:
aggregate arguments split into query-set branches), :mod:`persons` (privacy units, joins along
persons, identifier columns), :mod:`release` (the release rows a plan's outputs are opened by),
:mod:`checks` (the rule's checks on shares). The query planner describes outputs and calls
these; it carries no disclosure checks of its own. This package imports the MPC engine,
sqlglot and the error hierarchy, never the query planner, the agent or the network.
"""
