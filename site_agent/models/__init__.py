"""Model statements on the pooled data (docs/models.md).

Modules in dependency order: :mod:`statement` (the registry of statement keywords: each names
its planner, its MPC steps and the analyst's assembly), :mod:`kaplan_meier` (KAPLAN_MEIER with
the log-rank test). The release decisions these statements need live in
:mod:`site_agent.privacy` (for survival curves, :mod:`site_agent.privacy.survival`).
"""
