"""Model statements on the pooled data, fitted or computed on shares (docs/models.md).

Modules in dependency order: :mod:`.formula` (``y ~ x + C(cat) + a:b`` to design columns in
SQL), :mod:`.distributions` (t tails for summaries), :mod:`.statement` (recognising a model
statement and the registry of model kinds whose local step runs inside the session),
:mod:`.glm` (LINEAR, LOGISTIC, POISSON by Newton's method on shares), :mod:`.cox` (COX
proportional hazards on risk-set sums over a public time grid, by the same Newton steps),
:mod:`.plan_statements` (the registry of statements planned as an aggregate query plus MPC
steps of their own: each names its planner, its steps and the analyst's assembly),
:mod:`.kaplan_meier` (KAPLAN_MEIER with the log-rank test). The release decisions these
statements need live in :mod:`site_agent.privacy` (:mod:`site_agent.privacy.models`,
:mod:`site_agent.privacy.survival`).
"""
