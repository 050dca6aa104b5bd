"""Jupyter server configuration for the browser tests (galata sets a temporary root dir,
no token, and exposes the app as window.jupyterapp)."""

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # type: ignore[name-defined] # noqa: F821

# Uncomment to debug the server side of a test:
# c.ServerApp.log_level = "DEBUG"
