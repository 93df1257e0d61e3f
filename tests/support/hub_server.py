"""A loopback stand-in for the Hugging Face Hub, for the hf:// source tests (no public Hub is reachable here).

It answers the routes the unmodified ``huggingface_hub`` client calls for ``HfApi.model_info`` and
``snapshot_download`` (found by reading the client's source), with the headers the client relies on:

    GET  /api/models/{org}/{model}[/revision/{rev}]      model info: id, sha, private, lastModified, siblings
                                                         (size, blobId, lfs)
    GET  /api/models/{org}/{model}/tree/{rev}[/{path}]   recursive tree listing (files and directories)
    HEAD /{org}/{model}/resolve/{rev}/{path}             X-Repo-Commit, ETag (git blob sha1), for LFS files
                                                         X-Linked-Etag (sha256) + X-Linked-Size; Content-Length
    GET  /{org}/{model}/resolve/{rev}/{path}             the bytes; Range: bytes=N-[M] answered 206

Errors as the Hub sends them: 401 with ``X-Error-Code: RepoNotFound`` for a private repo without a token (and
``X-Error-Message: Invalid credentials in Authorization header`` for a wrong one), 404 with ``X-Error-Code``
RepoNotFound / RevisionNotFound / EntryNotFound. No Xet headers are ever sent, so the client downloads over plain
HTTP. Each revision of a repo is a directory on disk; its commit hash is derived from the repo and revision name.
``drop_once`` cuts the first GET of a file's body halfway (the connection closes), to exercise the client's resume;
``fail_once`` answers a file's first GET with 503, to exercise the job's own retry of the whole download.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 1024 * 1024  # files this big are served as LFS files, as the Hub does for weights


@dataclass
class Repo:
    revisions: dict[str, Path]           # branch/tag name -> directory holding that revision's files
    private: bool = False
    info: dict = field(default_factory=dict)  # more of model info: author, library_name, pipeline_tag, tags, cardData

    def commit(self, repo_id: str, name: str) -> str:
        return hashlib.sha1(f"{repo_id}@{name}".encode()).hexdigest()


@dataclass
class Hub:
    repos: dict[str, Repo] = field(default_factory=dict)
    token: str | None = None             # the token private repos accept
    drop_once: set[str] = field(default_factory=set)  # file paths whose first GET is cut halfway
    fail_once: set[str] = field(default_factory=set)  # file paths whose first GET is answered 503
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    listed_only: list[str] = field(default_factory=list)  # names model info lists besides the files (hostile repos)
    url: str = ""

    def add(self, repo_id: str, revisions: dict[str, Path], private: bool = False, info: dict | None = None) -> None:
        self.repos[repo_id] = Repo(revisions, private, info or {})


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        dirnames.sort()
        for name in sorted(names):
            full = Path(dirpath, name)
            out[full.relative_to(root).as_posix()] = full
    return out


def _entry(rel: str, path: Path) -> dict:
    st = path.stat()
    return dict(_entry_of(rel, str(path), st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=4096)
def _entry_of(rel: str, path: str, size: int, mtime_ns: int) -> tuple[tuple[str, object], ...]:
    """A file's tree entry, hashed once per (size, mtime) in 8 MiB blocks (the bench serves GiBs)."""
    blob, sha = hashlib.sha1(b"blob %d\0" % size), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            blob.update(chunk)
            sha.update(chunk)
    entry: dict[str, object] = {"type": "file", "path": rel, "size": size, "oid": blob.hexdigest()}
    if size >= LFS_THRESHOLD:
        entry["lfs"] = {"oid": sha.hexdigest(), "size": size, "pointerSize": 134}
    return tuple(entry.items())


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


STREAM_OVER = 16 << 20  # bodies bigger than this are copied from the file in blocks


def _copy_range(f, out, start: int, count: int) -> None:
    f.seek(start)
    while count > 0 and (chunk := f.read(min(count, 1 << 20))):
        out.write(chunk)
        count -= len(chunk)


@contextmanager
def serve_hub(hub: Hub, bind: str = "127.0.0.1", port: int = 0) -> Iterator[Hub]:
    """Run the stand-in on bind:port (default a free loopback port); hub.url is its base URL (HF_ENDPOINT)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _stream(self, path: Path, start: int, end: int, code: int, headers: dict[str, str]) -> None:
            """A big body from the file, never whole in memory (the bench's GiB shards)."""
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "HEAD":
                return
            with open(path, "rb") as f:
                _copy_range(f, self.wfile, start, end - start)

        def _error(self, code: int, error_code: str | None, message: str, commit: str | None = None) -> None:
            headers = {"X-Error-Message": message}
            if error_code:
                headers["X-Error-Code"] = error_code
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(code, json.dumps({"error": message}).encode(), headers)

        def _repo(self, repo_id: str) -> Repo | None:
            """The repo if this request may see it; otherwise the error is sent and None returned."""
            repo = hub.repos.get(repo_id)
            auth = self.headers.get("Authorization")
            if auth and (hub.token is None or auth != f"Bearer {hub.token}"):
                self._error(401, None, "Invalid credentials in Authorization header")
                return None
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            if repo.private and not auth:
                self._error(401, "RepoNotFound", "Invalid username or password.")
                return None
            return repo

        def _revision(self, repo_id: str, repo: Repo, rev: str) -> tuple[str, Path] | None:
            rev = unquote(rev)
            for name, root in repo.revisions.items():
                commit = repo.commit(repo_id, name)
                if rev in (name, commit):
                    return commit, root
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None

        def do_GET(self):
            self._handle()

        def do_HEAD(self):
            self._handle()

        def _handle(self) -> None:
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path, self.headers.get("Range")))
            if (m := _API.match(path)) and self.command == "GET":
                return self._api(m)
            if m := _RESOLVE.match(path):
                return self._resolve(*m.groups())
            self._error(404, None, "Sorry, we can't find the page you are looking for.")

        def _api(self, m: re.Match) -> None:
            repo_id, kind, rev, sub = m.group(1), m.group(2), m.group(3) or "main", m.group(4)
            repo = self._repo(repo_id)
            if repo is None:
                return
            found = self._revision(repo_id, repo, rev)
            if found is None:
                return
            commit, root = found
            entries = [_entry(rel, p) for rel, p in _files(root).items()]
            if kind == "tree":
                prefix = f"{unquote(sub).strip('/')}/" if sub else ""
                files = [e for e in entries if e["path"].startswith(prefix)]
                dirs = sorted({"/".join(e["path"].split("/")[:i]) for e in files
                               for i in range(1, e["path"].count("/") + 1)} - {prefix.rstrip("/")})
                listing = [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0}
                           for d in dirs if d.startswith(prefix)] + files
                return self._send(200, json.dumps(listing).encode())
            siblings = [{"rfilename": e["path"], "size": e["size"], "blobId": e["oid"],
                         **({"lfs": {"sha256": e["lfs"]["oid"], "size": e["lfs"]["size"], "pointerSize": 134}}
                            if "lfs" in e else {})} for e in entries]
            siblings += [{"rfilename": name, "size": 1, "blobId": "0" * 40} for name in hub.listed_only]
            newest = max((p.stat().st_mtime for p in _files(root).values()), default=0.0)  # the commit's date
            info = {"_id": commit[:24], "id": repo_id, "modelId": repo_id, "sha": commit, "private": repo.private,
                    "disabled": False, "gated": False, "tags": [], "siblings": siblings,
                    "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(newest)), **repo.info}
            self._send(200, json.dumps(info).encode())

        def _resolve(self, repo_id: str, rev: str, rel: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            found = self._revision(repo_id, repo, rev)
            if found is None:
                return
            commit, root = found
            rel = unquote(rel)
            files = _files(root)
            if rel not in files:
                return self._error(404, "EntryNotFound", f"{rel} does not exist on \"{rev}\"", commit)
            entry = _entry(rel, files[rel])
            size = entry["size"]
            headers = {"X-Repo-Commit": commit, "ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes"}
            if "lfs" in entry:
                headers.update({"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": str(size)})
            start, end, code = 0, size, 200
            rng = self.headers.get("Range")
            if rng and self.command == "GET" and (r := re.fullmatch(r"bytes=(\d+)-(\d*)", rng)):
                start, end, code = int(r.group(1)), (int(r.group(2)) + 1 if r.group(2) else size), 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            if end - start > STREAM_OVER and not (hub.fail_once or hub.drop_once):
                return self._stream(files[rel], start, end, code, headers)
            with open(files[rel], "rb") as f:
                f.seek(start)
                body = f.read(end - start)
            if self.command == "GET" and rel in hub.fail_once:
                hub.fail_once.discard(rel)
                return self._error(503, None, "Service Unavailable", commit)
            if self.command == "GET" and rel in hub.drop_once and code == 200:
                hub.drop_once.discard(rel)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(code, body, headers, content_type="application/octet-stream")

    httpd = http.server.ThreadingHTTPServer((bind, port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    hub.url = f"http://{bind}:{httpd.server_address[1]}"
    try:
        yield hub
    finally:
        httpd.shutdown()
        httpd.server_close()


def main() -> None:
    """`python -m tests.support.hub_server DIR REPO_ID BIND PORT`: DIR served as REPO_ID's main revision until
    killed (the shaped bench runs it inside its network namespace)."""
    directory, repo_id, bind, port = sys.argv[1:5]
    hub = Hub()
    hub.add(repo_id, {"main": Path(directory)})
    with serve_hub(hub, bind, int(port)):
        threading.Event().wait()


if __name__ == "__main__":
    main()
