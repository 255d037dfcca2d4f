"""A local HTTP server that answers like the Hugging Face hub for file downloads (tests only).

It serves ``/{owner}/{name}/resolve/{revision}/{path}`` (HEAD and GET, with ``Range``) from files held in
memory, with the headers ``huggingface_hub`` reads: ``X-Repo-Commit``, ``ETag`` (sha256 of the content for
``.safetensors`` files, as the hub does for LFS files; the git blob sha1 otherwise) and ``Content-Length``.
Unknown repositories and files get the hub's ``X-Error-Code`` answers. Faults can be planted per file: a GET
that stops after N bytes, or content that differs from the announced hash. Every request is logged.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def etag_of(path: str, data: bytes) -> str:
    if path.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()  # noqa: S324  git blob id


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    """Repositories ``repo_id -> {path: bytes}`` at one commit, plus planted faults."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the connection drops
    corrupt: set[str] = field(default_factory=set)  # paths whose bytes differ from the announced hash
    log: list[Request] = field(default_factory=list)

    def add_folder(self, repo_id: str, folder: Path, prefix: str = "") -> None:
        files = self.repos.setdefault(repo_id, {})
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                files[prefix + path.relative_to(folder).as_posix()] = path.read_bytes()

    def gets(self, path_end: str = "") -> list[Request]:
        return [r for r in self.log if r.method == "GET" and r.path.endswith(path_end)]

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.log.append(Request(self.command, self.path, self.headers.get("Range")))
                match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
                if match is None:
                    return self._error(404, "EntryNotFound")
                repo_id, revision, path = match.groups()
                if repo_id not in hub.repos:
                    return self._error(401, "RepoNotFound")
                if revision not in ("main", hub.commit):
                    return self._error(404, "RevisionNotFound")
                data = hub.repos[repo_id].get(path)
                if data is None:
                    return self._error(404, "EntryNotFound")
                etag = etag_of(path, data)
                if path in hub.corrupt:
                    data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
                start = 0
                ranged = self.headers.get("Range")
                if body and ranged:
                    start = int(re.fullmatch(r"bytes=(\d+)-", ranged).group(1))
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                cut = hub.cut_after.pop(path, None)
                if cut is not None:  # send part of it, then drop the connection mid-file
                    self.wfile.write(data[start:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

            def _error(self, status: int, code: str) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # shutdown() waits for the next poll: 0.05 s instead of the default 0.5 s, once per test that uses it
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"
