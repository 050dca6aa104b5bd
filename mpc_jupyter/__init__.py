"""The analyst side of mpc-jupyter: magics, client, results, charts, widgets, demo.

``%load_ext mpc_jupyter`` registers the ``%mpc``/``%%mpc`` magics (:mod:`mpc_jupyter.magic`)
and the PNG display of chart figures; see docs/notebook.md. The same powers from Python::

    from mpc_jupyter import Consortium
    with Consortium.connect("consortium.toml", analyst="alice") as consortium:
        frame = consortium.query("SELECT sex, COUNT(*) AS n FROM lung GROUP BY sex")

``Consortium`` (and its errors) are imported on first use, so importing the package stays cheap
and never imports IPython.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Consortium, QueryFailed, SiteUnavailable
    from .results import print_summary

__version__ = "0.1.0"
__all__ = ["Consortium", "QueryFailed", "SiteUnavailable", "load_ipython_extension", "print_summary"]


def __getattr__(name: str) -> Any:
    if name in ("Consortium", "QueryFailed", "SiteUnavailable"):
        from . import client

        return getattr(client, name)
    if name == "print_summary":  # a result as text: a model's fit line, the table, the receipt
        from .results import print_summary

        return print_summary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics, their settings (``%config MpcMagic``) and the chart display."""
    from matplotlib.figure import Figure

    from .magic import MpcMagic, figure_png

    magics = MpcMagic(shell=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
    ipython.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
