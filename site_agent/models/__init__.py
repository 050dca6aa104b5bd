"""Model statements on the pooled data (docs/models.md).

Modules in dependency order: :mod:`plan_statements` (the registry of statements planned as an
aggregate query plus MPC steps of their own: each names its planner, its steps and the analyst's
assembly), :mod:`kaplan_meier` (KAPLAN_MEIER with
the log-rank test). The release decisions these statements need live in
:mod:`site_agent.privacy` (for survival curves, :mod:`site_agent.privacy.survival`).
"""
