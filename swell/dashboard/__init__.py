"""The operator's web dashboard, served by ``swell serve`` at ``/`` (and ``/docs`` offline).

Only the server's composition root imports this package: it wraps the server's app
in :class:`Dashboard`.
"""

from swell.dashboard._app import Dashboard

__all__ = ["Dashboard"]
