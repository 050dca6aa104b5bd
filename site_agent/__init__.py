"""The site side of mpc-jupyter: MPC engine, query planner, agent daemon.

Never imports IPython or ipywidgets; the analyst side (``mpc_jupyter``) depends on
this package, never the reverse.
"""

__version__ = "0.1.0"
