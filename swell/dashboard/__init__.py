"""The operator's web dashboard, served by ``swell serve`` at ``/`` (and ``/docs`` offline).

Only the server's composition root imports this package: it wraps the server's app
in :class:`Dashboard`, and hands :func:`run_advise` to the control plane for the
advice it computes in the background.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from swell.http import Receive, Scope, Send, header

if TYPE_CHECKING:
    from swell.control import SwellApp

__all__ = ["Dashboard", "run_advise"]


class Dashboard:
    """ASGI: the dashboard's routes (``/``, ``/ui/…``, ``/docs``, a signed-in
    browser's ``/openapi.json``), then ``app`` for everything else.

    The pages' code (``_app``, its templates and charts) is imported at the first
    request for one of them, so a server nobody opens a browser on does not hold
    it (about 1 MiB); a predict costs one ``str.startswith`` more.
    """

    def __init__(self, app: SwellApp, *, now: Callable[[], float] = time.time) -> None:
        self.app = app
        self._now = now
        self._pages: Any = None
        # The front door reads the app's body limit; it is the inner app's.
        self.max_request_bytes = app.max_request_bytes
        # Predicts (the fast path's POST /model/…) are the app's alone: the fast
        # path calls it directly, without this layer.
        self.fast_path_app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/model/"):  # the hot path: straight through
                await self.app(scope, receive, send)
                return
            if (
                path == "/"
                or path.startswith(("/ui/", "/docs"))
                or (path == "/openapi.json" and header(scope, b"authorization") is None)
            ):
                await self.pages(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @property
    def pages(self) -> Any:
        """The dashboard proper (``swell.dashboard._app``), made at first use."""
        if self._pages is None:
            from swell.dashboard._app import DashboardPages

            self._pages = DashboardPages(self.app, now=self._now)
        return self._pages


async def run_advise(
    view: Mapping[str, Any], traffic: Mapping[str, Any], max_replica_cap: int, *, quick: bool = False
) -> dict[str, Any]:
    """``swell advise`` over a deployment's recorded traffic (``swell.dashboard._advise``, imported
    at the first run like the pages): the plane's background advice calls it."""
    from swell.dashboard._advise import run_advise as run

    return await run(view, traffic, max_replica_cap, quick=quick)
