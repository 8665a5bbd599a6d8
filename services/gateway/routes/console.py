"""``GET /console``: the review console, plain static files shipped inside the package.

The page itself needs no key; every call it makes to the API carries the key the user
types in (kept in the tab's sessionStorage), so the server's role checks apply as usual.
Nothing is fetched from elsewhere, so the console works offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
SECURITY_HEADERS = {
    # Everything comes from this origin; the live feed is a same-origin WebSocket.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate with the ETag each time, so an upgraded gateway serves its own scripts.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount(app: FastAPI) -> None:
    """Serve the console at ``/console/`` (``/console`` redirects there)."""

    @app.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/")

    app.mount("/console", ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console")
