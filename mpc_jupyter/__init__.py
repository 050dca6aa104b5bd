"""The analyst side of mpc-jupyter: magics, client, results, charts, widgets, demo."""

__version__ = "0.1.0"
