"""The %%mpc query language: parse (sqlglot), validate, plan, run, explain.

Public API::

    plan = compile_query(text, schema, rules)   # same text -> same plan.digest() at every site
    frame = execute(plan, {"site_a": con_a, ...})  # in-process run over DuckDB connections
    print(explain(plan))                         # the plan in words, with rounds and bytes

``mpc_program(p, plan, inputs)`` is the committee's protocol, run unchanged by the networked agent.
Imports nothing of ``site_agent.net``, the CLI or Jupyter.
"""

from .catalog import Column, DisclosureRules, Schema, Table, rules_from_policy, schema_from_duckdb
from .execute import assemble, execute, local_preaggregates, share_inputs
from .explain import explain
from .plan import Plan, build_plan, compile_query
from .program import MpcResult, mpc_program

__all__ = [
    "Column",
    "DisclosureRules",
    "MpcResult",
    "Plan",
    "Schema",
    "Table",
    "assemble",
    "build_plan",
    "compile_query",
    "execute",
    "explain",
    "local_preaggregates",
    "mpc_program",
    "rules_from_policy",
    "schema_from_duckdb",
    "share_inputs",
]
