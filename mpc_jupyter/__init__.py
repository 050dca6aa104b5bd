"""The analyst side of mpc-jupyter: magics, client, results, charts, widgets, demo.

``%load_ext mpc_jupyter`` registers the ``%mpc``/``%%mpc`` magics (:mod:`mpc_jupyter.magic`)
and the PNG display of chart figures; see docs/notebook.md.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics, their settings (``%config MpcMagic``) and the chart display."""
    from matplotlib.figure import Figure

    from .magic import MpcMagic, figure_png

    magics = MpcMagic(shell=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
    ipython.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
