"""The playground page of ``dlmprompt serve``: ``GET /`` and its two static files.

Plain hand-written files in ``dlmprompt/serving/static/`` (no build step, nothing fetched from
elsewhere, so it works offline), read through :mod:`importlib.resources`. The page talks to the
native API only (``GET /v1/templates``, ``POST /v1/generate`` with ``"stream": true``), so it
sees exactly what any client sees; an API key typed into the page goes out as
``Authorization: Bearer``. The page itself is not guarded: it holds no data.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi.responses import Response

# the only files served, with their media types: a request names one of these or gets a 404
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
# 'self' only: the page loads nothing from elsewhere (it must work offline) and runs no inline script
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def static_file(name: str) -> bytes:
    """A shipped static file's bytes (``KeyError`` for a name that is not one of :data:`STATIC`)."""
    if name not in STATIC:
        raise KeyError(name)
    return (resources.files("dlmprompt.serving") / "static" / name).read_bytes()


def add_playground(app: Any) -> None:
    """Add ``GET /`` (the page) and ``GET /static/{name}`` (its script and style) to ``app``;
    neither is in the OpenAPI schema."""
    from starlette.exceptions import HTTPException

    def file_response(name: str) -> Response:
        try:
            body = static_file(name)
        except (KeyError, FileNotFoundError):
            raise HTTPException(404, f"no static file {name[:60]!r}; the files are {sorted(STATIC)}") from None
        return Response(body, media_type=STATIC[name], headers=_HEADERS)

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        return file_response("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Any:
        return file_response(name)
