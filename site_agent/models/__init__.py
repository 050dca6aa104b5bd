"""Models on the pooled data, fitted on shares (docs/models.md).

Modules in dependency order: :mod:`.formula` (``y ~ x + C(cat) + a:b`` to design columns in
SQL), :mod:`.distributions` (t tails for summaries), :mod:`.statement` (recognising a model
statement and the registry of model kinds), :mod:`.glm` (LINEAR, LOGISTIC, POISSON by
Newton's method on shares), :mod:`.cox` (COX proportional hazards on risk-set sums over a public
time grid, by the same Newton steps).
"""
