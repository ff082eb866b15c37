"""The node's web dashboard: its static files (HTML, ES modules, CSS, icon), served at `/` and under `/ui/`.

The files ship inside the package (`services/gateway/web/`, package data), are read once when the app is built
and served from memory, so no request path ever reaches the file system. They are open even off loopback: they
hold no node data (every figure the dashboard shows comes from the API, which asks for the key; the page asks
the user for it once and keeps it in the browser session). A Content-Security-Policy keeps the page to its own
origin: nothing is ever loaded from a CDN.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter
from fastapi.responses import Response

from avadios.errors import NotFound

WEB_PACKAGE = "avadios.services.gateway"
WEB_FOLDER = "web"
ASSET_PREFIX = "/ui/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # ES modules are refused under any other type
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# blob: for the audio the Voice page records or receives, and the files the Files page downloads.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "Cache-Control": "no-cache",  # revalidate: an upgraded node serves its new dashboard at once
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str


def load_assets(root: Traversable | None = None) -> dict[str, Asset]:
    """Every servable file of the dashboard by its path relative to `web/` (`app.js`, `pages/chat.js`)."""
    root = root if root is not None else resources.files(WEB_PACKAGE).joinpath(WEB_FOLDER)
    assets: dict[str, Asset] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            if suffix in MEDIA_TYPES:
                assets[prefix + entry.name] = Asset(entry.read_bytes(), MEDIA_TYPES[suffix])

    walk(root, "")
    if "index.html" not in assets:
        raise RuntimeError(f"the dashboard's index.html is missing from {root}: the package was built without it")
    return assets


def web_router(assets: dict[str, Asset]) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def serve(name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFound(f"no dashboard file {name!r}")
        return Response(asset.body, media_type=asset.media_type, headers=HEADERS)

    @router.get("/")
    async def dashboard() -> Response:
        return serve("index.html")

    @router.get(ASSET_PREFIX + "{name:path}")
    async def asset(name: str) -> Response:
        return serve(name)

    @router.get("/favicon.ico")  # browsers ask for it whatever the page links; a 404 is a console error
    async def favicon() -> Response:
        return serve("favicon.svg")

    return router
