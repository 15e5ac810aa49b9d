"""Static files served from memory with a content hash in their URL, and gzip for complete HTML pages.

:class:`StaticAssets` reads web/static once per app (``WebState.create``), hashes and gzips each file once per
version of it (later apps of the process reuse that);
:func:`gzip_html` is the web routers' middleware (never the /v1 API's: its per-request overhead is benchmarked).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["IMMUTABLE", "Asset", "StaticAssets", "accepts_gzip", "gzip_html"]

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"  # an address without the hash: the browser asks each time, and gets a 304 when unchanged
_MIN_SIZE = 1024  # smaller bodies gain little from gzip and pay its header
_HASHED = re.compile(r"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{8})(?P<ext>\.[A-Za-z0-9]+)$")
_TEXT = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file: its bytes, their gzip (when that is smaller), its type and hash."""

    name: str
    body: bytes
    gzipped: bytes | None
    media_type: str
    digest: str  # the first 8 hex digits of the SHA-256 of the body

    @property
    def url(self) -> str:
        """The versioned address: ``/static/app.3f2a9c1b.css``."""
        path = Path(self.name)
        return f"/static/{path.stem}.{self.digest}{path.suffix}"

    @property
    def etag(self) -> str:
        """The ETag: the hash, quoted."""
        return f'"{self.digest}"'


@dataclass(frozen=True, slots=True)
class StaticAssets:
    """Every file of a static folder, by name, read and compressed once."""

    files: dict[str, Asset]

    @classmethod
    def load(cls, folder: Path) -> StaticAssets:
        """Read, hash and gzip every file directly in ``folder``."""
        files: dict[str, Asset] = {}
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            stat = path.stat()
            files[path.name] = _asset(str(path), stat.st_mtime_ns, stat.st_size)
        return cls(files)

    def url(self, name: str) -> str:
        """The address of ``name`` for templates (``static('app.css')``), with its content hash."""
        asset = self.files.get(name)
        if asset is None:
            raise KeyError(f"no static file {name!r}")  # a typo in a template fails its test, not a visitor
        return asset.url

    def find(self, name: str) -> tuple[Asset, bool] | None:
        """The asset an address names, and whether that address is the current versioned one (cache forever)."""
        if name in self.files:
            return self.files[name], False
        match = _HASHED.match(name)
        asset = self.files.get(match["stem"] + match["ext"]) if match else None
        if asset is None or match is None:
            return None
        return asset, match["hash"] == asset.digest  # an old hash gets today's file, but is not cached forever

    def response(self, name: str, request: Request[Any, Any, Any]) -> Response[bytes]:
        """The file ``name`` names (hashed or not), as a 200, a 304 for a matching ETag, or a 404."""
        found = self.find(name)
        if found is None:
            raise NotFoundException()
        asset, current = found
        headers = {
            "cache-control": IMMUTABLE if current else REVALIDATE,
            "etag": asset.etag,
            "vary": "accept-encoding",
            "x-content-type-options": "nosniff",
        }
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(b"", status_code=304, headers=headers)
        if asset.gzipped is not None and accepts_gzip(request.headers.get("accept-encoding", "")):
            headers["content-encoding"] = "gzip"
            return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    def handler(self) -> Any:
        """The ``GET /static/{name}`` route handler."""
        assets = self

        @get("/static/{name:str}", include_in_schema=False, sync_to_thread=False, name="static")
        def static_file(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
            """A static file from memory."""
            return assets.response(name, request)

        return static_file


@lru_cache(maxsize=256)
def _asset(path: str, mtime_ns: int, size: int) -> Asset:
    """One file read, hashed and gzipped, once per version of it (``mtime_ns`` and ``size`` are the cache's key):
    every app a process builds (each test's) would otherwise compress the 1.8 MB Swagger UI bundle again."""
    file = Path(path)
    body = file.read_bytes()
    media = _TEXT.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    packed = gzip.compress(body, compresslevel=9, mtime=0) if len(body) >= _MIN_SIZE else None
    smaller = packed if packed is not None and len(packed) < len(body) else None
    return Asset(file.name, body, smaller, media, hashlib.sha256(body).hexdigest()[:8])


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip;q=0`` does not)."""
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in {"gzip", "*"}:
            quality = params.strip()
            return not (quality.startswith("q=") and _zero(quality[2:]))
    return False


def _zero(value: str) -> bool:
    try:
        return float(value) == 0
    except ValueError:
        return False


def gzip_html(app: ASGIApp) -> ASGIApp:
    """Middleware: gzip a complete ``text/html`` response over 1 KB when the client accepts gzip.

    Anything else passes through untouched, and so does a response whose body comes in more than one message:
    an answer streamed as Server-Sent Events must reach the browser token by token.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] != ScopeType.HTTP or not accepts_gzip(headers.get(b"accept-encoding", b"").decode("latin-1")):
            await app(scope, receive, send)
            return
        start: Any = None
        passing = False

        async def wrapped(message: Message) -> None:
            nonlocal start, passing
            if passing:
                await send(message)
            elif message["type"] == "http.response.start":
                if _is_html(message):
                    start = message  # held until the body shows whether it is complete
                else:
                    passing = True
                    await send(message)
            elif message["type"] == "http.response.body" and start is not None:
                passing = True
                body = message.get("body", b"")
                if message.get("more_body", False) or len(body) < _MIN_SIZE:
                    await send(start)
                    await send(message)
                    return
                packed = gzip.compress(body, compresslevel=6)
                await send(_compressed_start(start, len(packed)))
                await send({"type": "http.response.body", "body": packed, "more_body": False})
            else:
                await send(message)

        await app(scope, receive, wrapped)

    return middleware


def _is_html(start: Any) -> bool:
    found = {name.lower(): value for name, value in start.get("headers", [])}
    return found.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in found


def _compressed_start(start: Any, length: int) -> Any:
    headers: list[tuple[bytes, bytes]] = list(start.get("headers", []))
    vary = [v for k, v in headers if k.lower() == b"vary"] + [b"accept-encoding"]
    kept = [(k, v) for k, v in headers if k.lower() not in {b"content-length", b"vary"}]
    length_header = (b"content-length", str(length).encode())
    return {**start, "headers": [*kept, (b"content-encoding", b"gzip"), length_header, (b"vary", b", ".join(vary))]}
