"""A small, real HTTP server on 127.0.0.1 that answers like a Hugging Face hub, for ``snapshot_download``.

It serves repositories from local folders, with just the routes huggingface_hub's downloads use:

* ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: the model info, with ``sha`` (the
  commit) and ``siblings`` (with ``?blobs=true``: size, git blob id and LFS sha256 of each file);
* ``GET /api/models/{repo}/tree/{rev}[/{path}]``: the file listing (``recursive``), in one page;
* ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}``: the file, with ``ETag`` (sha256 for LFS files, git blob id
  otherwise), ``X-Repo-Commit``, ``Content-Length`` and ``Range`` support.

Errors carry the hub's ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
``GatedRepo``), which huggingface_hub turns into its exception classes. A repository may be gated (files
need ``Authorization: Bearer TOKEN``), and a file may be served with other bytes than the listing describes
(``tamper``), to test that a bad download is refused. Every request is recorded. Use it as a context manager;
point ``HF_ENDPOINT`` at :attr:`FakeHub.url`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub", "HubRequest"]

HOST = "127.0.0.1"
LFS_SUFFIXES = (".onnx", ".data", ".safetensors", ".gguf", ".bin")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class HubRequest:
    """One request as the fake saw it."""

    method: str
    path: str
    authorization: str | None


@dataclass
class _File:
    path: str
    data: bytes
    served: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data, usedforsecurity=False).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class _Repo:
    repo_id: str
    files: dict[str, _File]
    commit: str
    token: str | None = None
    branches: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """The fake hub; :meth:`add_repo` serves a folder as ``OWNER/REPO`` (branch ``main``)."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[HubRequest] = []
        self._server = ThreadingHTTPServer((HOST, 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakehub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_repo(
        self,
        repo_id: str,
        folder: Path | None = None,
        *,
        token: str | None = None,
        tamper: dict[str, bytes] | None = None,
        extra: dict[str, bytes] | None = None,
    ) -> str:
        """Serve the files under ``folder`` (if any) and ``extra`` ({path: bytes}) as ``repo_id``; return its commit.

        ``token``: the repository is gated, its files need that bearer token. ``tamper``: {path: bytes} served
        for those files instead of their content (the listing still describes the real content).
        """
        contents = {}
        if folder is not None:
            contents = {
                p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            }
        contents.update(extra or {})
        tamper = tamper or {}
        files = {
            path: _File(path, data, tamper.get(path, data), path.endswith(LFS_SUFFIXES))
            for path, data in sorted(contents.items())
        }
        listing = json.dumps([[f.path, f.blob_id] for f in files.values()]).encode()
        commit = hashlib.sha1(repo_id.encode() + listing, usedforsecurity=False).hexdigest()
        self.repos[repo_id] = _Repo(repo_id, files, commit, token, {"main": commit})
        return commit

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def downloads(self, repo_id: str) -> list[str]:
        """The paths of ``repo_id`` fetched with GET so far."""
        prefix = f"/{repo_id}/resolve/"
        return [r.path.split("/", 5)[-1] for r in self.requests if r.method == "GET" and r.path.startswith(prefix)]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fakehub/1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        # ---------------------------------------------------------------- plumbing
        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data: Any, headers: dict[str, str] | None = None) -> None:
            self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            extra = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
            self._send(status, body, {**extra, **(headers or {})})

        def _repo(self, owner: str, name: str) -> _Repo | None:
            repo = hub.repos.get(f"{unquote(owner)}/{unquote(name)}")
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
            return repo

        def _commit(self, repo: _Repo, revision: str) -> str | None:
            rev = unquote(revision)
            if rev in repo.branches:
                return repo.branches[rev]
            if rev == repo.commit:
                return rev
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None

        def _allowed(self, repo: _Repo) -> bool:
            if repo.token is None or self.headers.get("Authorization") == f"Bearer {repo.token}":
                return True
            message = f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated."
            self._error(401, "GatedRepo", message)
            return False

        # ---------------------------------------------------------------- routes
        def do_GET(self) -> None:
            self._route()

        def do_HEAD(self) -> None:
            self._route()

        def _route(self) -> None:
            url = urlsplit(self.path)
            hub.requests.append(HubRequest(self.command, url.path, self.headers.get("Authorization")))
            parts = url.path.split("/")[1:]  # still quoted: a revision may hold an encoded '/'
            query = parse_qs(url.query)
            if parts[:2] == ["api", "models"] and len(parts) >= 4 and self.command == "GET":
                self._api(parts[2], parts[3], parts[4:], query)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts[0], parts[1], parts[3], unquote("/".join(parts[4:])))
            else:
                self._error(404, "NotFound", "no such route")

        def _api(self, owner: str, name: str, rest: list[str], query: dict[str, list[str]]) -> None:
            repo = self._repo(owner, name)
            if repo is None:
                return
            if not rest or rest[0] == "revision":
                commit = self._commit(repo, rest[1] if len(rest) > 1 else "main")
                if commit is None:
                    return
                blobs = query.get("blobs", ["false"])[0].lower() == "true"
                self._json(_model_info(repo, commit, blobs))
            elif rest[0] == "tree" and len(rest) >= 2:
                commit = self._commit(repo, rest[1])
                if commit is None:
                    return
                prefix = unquote("/".join(rest[2:])).strip("/")
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                self._json(_tree(repo, prefix, recursive))
            else:
                self._error(404, "NotFound", "no such route")

        def _resolve(self, owner: str, name: str, revision: str, path: str) -> None:
            repo = self._repo(owner, name)
            if repo is None:
                return
            commit = self._commit(repo, revision)
            if commit is None or not self._allowed(repo):
                return
            item = repo.files.get(path)
            if item is None:
                self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": commit})
                return
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{item.etag}"',
                "X-Repo-Commit": commit,
                "Accept-Ranges": "bytes",
            }
            body, status = item.served, 200
            match = _RANGE.match(self.headers.get("Range") or "")
            if match and self.command == "GET":
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else len(body) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                body, status = body[start : end + 1], 206
            self._send(status, body, headers)

    return Handler


def _model_info(repo: _Repo, commit: str, blobs: bool) -> dict[str, Any]:
    siblings: list[dict[str, Any]] = []
    for item in repo.files.values():
        sibling: dict[str, Any] = {"rfilename": item.path}
        if blobs:
            sibling.update(size=len(item.data), blobId=item.blob_id)
            if item.lfs:
                sibling["lfs"] = {"size": len(item.data), "sha256": item.sha256, "pointerSize": 134}
        siblings.append(sibling)
    return {
        "_id": commit[:24],
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": commit,
        "private": False,
        "gated": "manual" if repo.token else False,
        "disabled": False,
        "tags": [],
        "siblings": siblings,
    }


def _tree(repo: _Repo, prefix: str, recursive: bool) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    folders: set[str] = set()
    for item in repo.files.values():
        if prefix and not item.path.startswith(prefix + "/"):
            continue
        rest = item.path[len(prefix) + 1 :] if prefix else item.path
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.add("/".join([prefix, *parts[:depth]]).strip("/"))
        if recursive or len(parts) == 1:
            entry: dict[str, Any] = {"type": "file", "oid": item.blob_id, "size": len(item.data), "path": item.path}
            if item.lfs:
                entry["lfs"] = {"oid": item.sha256, "size": len(item.data), "pointerSize": 134}
            entries.append(entry)
    oid = hashlib.sha1(repo.commit.encode(), usedforsecurity=False).hexdigest()
    return [{"type": "directory", "oid": oid, "path": f} for f in sorted(folders)] + entries
