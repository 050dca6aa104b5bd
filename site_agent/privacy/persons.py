"""Persons, not rows: joins along person columns only, identifiers nowhere else.

Each table of the schema names its privacy unit, the column that identifies a person
(``person = true`` in schema.toml). Cell sizes count distinct persons, so a query cannot
anchor or multiply rows to make one person look like many. Joins may only connect tables
along their person columns (``ON a.person = b.person``, possibly with further equalities
between columns of the two tables): ``ON TRUE``, a literal (``ON b.id = 5``) or a condition
on one table alone would let an analyst attach one chosen row, or a site's whole table, to
every row of a cell. Person and identifier columns appear only in those equalities, and in
``COUNT(DISTINCT person)`` (which only counts the persons a cell already holds).

Everything here reads the resolved query tree (columns qualified by table alias) and raises
the analyst's error through ``fail``; it decides, the parser only reports positions.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlglot.expressions as exp

from .contributions import Fail


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def check_join(
    on: exp.Expression, alias: str, earlier: list[str], persons: Mapping[str, str | None], fail: Fail
) -> None:
    """Refuse a join of table ``alias`` to the ``earlier`` aliases unless ``on`` is a conjunction of
    column equalities between ``alias`` and earlier tables, one of them joining person columns.

    ``persons`` maps each alias to its table's person column (None: the table has none).
    """
    linked = False
    for part in _conjuncts(on):
        if not isinstance(part, exp.EQ) or not all(isinstance(s, exp.Column) for s in (part.this, part.expression)):
            fail(
                part,
                f"JOIN ... ON takes equalities between columns of the two tables, not {part.sql('duckdb')} "
                "(put other conditions in WHERE)",
            )
        left, right = part.this, part.expression
        sides = {left.table.lower(), right.table.lower()}
        other = sides - {alias}
        if alias not in sides or len(other) != 1 or not other <= set(earlier):
            fail(part, f"{part.sql('duckdb')} must compare a column of {alias} with a column of an earlier table")
        if all(persons.get(c.table.lower()) == c.name.lower() for c in (left, right)):
            linked = True
    if not linked:
        names = {a: persons.get(a) for a in [*earlier, alias]}
        missing = [a for a, p in names.items() if p is None]
        why = (
            f"table {missing[0]} declares no person column in the schema"
            if missing
            else "ON must include an equality of the two tables' person columns ("
            + ", ".join(f"{a}.{p}" for a, p in names.items())
            + ")"
        )
        fail(on, f"joins follow persons only: {why}")


def identifier_uses(tree: exp.Select, columns: set[str]) -> list[exp.Column]:
    """The uses of person or identifier ``columns`` (``alias.column``, lower case) that the rule
    forbids: anywhere but an ON equality or the plain argument of ``COUNT(DISTINCT ...)``.
    A plain distinct count of such a column counts what the cell already holds; any expression
    around it (``COUNT(DISTINCT CASE WHEN id = 5 AND ... THEN 1 END)``) could read a record."""
    out = []
    for col in tree.find_all(exp.Column):
        if not col.table or f"{col.table.lower()}.{col.name.lower()}" not in columns:
            continue
        if isinstance(col.parent, exp.EQ) and col.find_ancestor(exp.Join) is not None:
            continue  # check_join decides which equalities a join may have
        if isinstance(col.parent, exp.Distinct) and isinstance(col.parent.parent, exp.Count):
            continue
        out.append(col)
    return out
