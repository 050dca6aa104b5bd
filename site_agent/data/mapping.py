"""A local table presented under the consortium's names and codes, without ETL.

A site whose table is called ``lung_2024`` with a column ``"ph.ecog"`` and sex coded ``1``/``2``
declares in ``agent.toml``::

    [tables.lung]
    table = "lung_2024"
    [tables.lung.columns]      # consortium name = local name
    ph_ecog = "ph.ecog"
    [tables.lung.values.sex]   # local code (as text) = consortium value
    "1" = "M"
    "2" = "F"

and its engine serves ``lung`` as ``SELECT "ph.ecog" AS ph_ecog, CASE WHEN CAST(sex AS TEXT) =
'1' THEN 'M' ... END AS sex, ... FROM lung_2024`` (a view in DuckDB, a subquery in the SQL sent
to a server). Every local column keeps its place; unmapped names are folded to lower case, the
consortium's spelling. A local code with no mapping becomes NULL: ``mpc-site-agent check``
counts them, and a NULL group key makes the site refuse a query rather than drop rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlglot import exp

from ..config import Scalar, TableSource


def presenting_select(
    source: TableSource, table: exp.Table, local_columns: Sequence[str], casts: Mapping[str, str] | None = None
) -> exp.Select:
    """``SELECT <local columns renamed and recoded> FROM table``: ``source``'s table as the
    consortium sees it. ``local_columns`` are the table's columns as its engine names them;
    ``casts`` (local column -> type) converts a column before anything else."""
    reverse = {local: name for name, local in source.columns.items()}
    missing = [f"{name} = {local!r}" for name, local in source.columns.items() if local not in local_columns]
    if missing:
        raise source.error(
            "columns",
            f"names local columns that {source.describe()} does not have: {', '.join(missing)}",
            f"use one of its columns: {', '.join(local_columns)}",
        )
    projections: list[exp.Expr] = []
    seen: set[str] = set()
    for local in local_columns:
        name = reverse.get(local, local.lower())
        if name in seen:
            raise source.error(
                "columns",
                f"two local columns of {source.describe()} present as {name!r}",
                f"map one of them to another name under [tables.{source.name}.columns]",
            )
        seen.add(name)
        value: exp.Expression = exp.column(local, quoted=True)
        if casts and local in casts:
            value = exp.Cast(this=value, to=exp.DataType.build(casts[local]))
        if name in source.values:
            value = _recode(value, source.values[name])
        projections.append(exp.alias_(value, name, quoted=True))
    unknown = sorted(set(source.values) - seen)
    if unknown:
        raise source.error(
            "values",
            f"names columns the table does not present: {', '.join(unknown)}",
            f"use consortium column names: {', '.join(sorted(seen))}",
        )
    return exp.select(*projections).from_(table)


def _recode(column: exp.Expression, codes: Mapping[str, Scalar]) -> exp.Expression:
    """``CASE WHEN CAST(column AS TEXT) = 'code' THEN value ... END`` (no ELSE: unmapped is NULL)."""
    case = exp.Case()
    for code, value in codes.items():
        as_text = exp.Cast(this=column.copy(), to=exp.DataType.build("text"))
        case = case.when(exp.EQ(this=as_text, expression=exp.Literal.string(str(code))), exp.convert(value))
    return case
