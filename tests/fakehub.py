"""A fake Hugging Face Hub on 127.0.0.1 for tests: the endpoints huggingface_hub 2.4.0 really calls.

Owns serving repos described in memory to the real huggingface_hub client, logging every request, and
injecting faults (a connection dropped after N bytes, an HTTP error status, corrupted bytes). Never talks
to the real Hub and never mocks huggingface_hub: tests point Settings(hub_endpoint=...) at it.

Endpoints (as huggingface_hub sends them; the repo id is two path segments, revisions are %-quoted):

    GET  /api/models/{repo}                      model_info of main: {"id", "sha", "siblings", ...}
    GET  /api/models/{repo}/revision/{rev}       model_info / repo_info / resolve_revision at a revision
    GET  /api/models/{repo}/refs                 list_repo_refs: {"branches": [{"name","ref","targetCommit"}], ...}
    GET  /api/models/{repo}/tree/{rev}[/{path}]  list_repo_tree / list_repo_files (?recursive=&expand=), one page
    HEAD /{repo}/resolve/{rev}/{file}            file metadata: X-Repo-Commit, ETag, Content-Length; for LFS
                                                 files a 302 to the "CDN" with X-Linked-Etag (sha256) and
                                                 X-Linked-Size, as the real Hub answers
    GET  /{repo}/resolve/{rev}/{file}            the bytes of a regular file (Range honoured); LFS: the 302
    GET  /lfs/{sha256}?file=...                  on a second listener (another port = another origin, so the
                                                 client treats it as a CDN and drops auth): LFS bytes, Range honoured

Dataset repos (the run backup, backup.py), with tokens (`add_token`): anonymous callers see public datasets only;
a read token cannot create or commit; a write token may create and commit in its own namespace only:

    POST /api/repos/create                        create_repo: {"name", "organization", "type", "visibility"}; 409
                                                  if it exists (a ".gitattributes" is its first commit, as on the Hub)
    GET  /api/datasets/{repo}[/revision/{rev}]    dataset_info: {"id", "sha", "private", "siblings", ...}
    GET  /api/datasets/{repo}/tree/{rev}[/{path}] list_repo_tree, one page
    POST /api/datasets/{repo}/preupload/{rev}     upload modes: every file "regular" (the real Hub picks LFS above
                                                  10 MB; the backup's JSONL files stay far below), with the oid of
                                                  the file already there, so unchanged files are left out
    POST /api/datasets/{repo}/commit/{rev}        NDJSON: a header line, then "file" (base64) / "deletedFile" lines,
                                                  applied on top of main; `fail_next_commit` answers an error instead
    HEAD/GET /datasets/{repo}/resolve/{rev}/{file}  a file's bytes, as for models

Errors carry the Hub's X-Error-Code / X-Error-Message headers (RepoNotFound with 401 like the real Hub for
anonymous callers, RevisionNotFound, EntryNotFound, GatedRepo), which huggingface_hub turns into its typed errors.

Usage:

    repos = {"org/model": {"main": (sha, {"config.json": b"{}", "model.safetensors": b"..."}),
                           "step1000": (sha2, {...})}}
    with FakeHub(repos) as hub:          # or hub = FakeHub(repos); url = hub.start(); ...; hub.stop()
        Settings(hub_endpoint=hub.endpoint, hf_cache_dir=tmp_path / "hf", ...)
        hub.fail_next_download("model.safetensors", after_bytes=1000)
        hub.requests                     # [LoggedRequest(method, path, query, headers, server), ...]
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

# Suffixes stored in git-lfs on the Hub (as in its default .gitattributes).
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npy", ".zip")

FileMap = dict[str, "bytes | Path"]
RepoMap = dict[str, dict[str, tuple[str, FileMap]]]  # repo id -> revision name -> (commit sha, files)


def commit_sha(text: str) -> str:
    """A deterministic 40-hex commit sha for a label (e.g. commit_sha('org/model@step1000'))."""
    return hashlib.sha1(text.encode()).hexdigest()


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob, as the Hub's ETag for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def files_from_dir(directory: str | Path) -> dict[str, bytes]:
    """Every file under `directory` as {relative posix path: bytes}, to serve a checkpoint folder."""
    root = Path(directory)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class LoggedRequest:
    method: str  # "GET" or "HEAD"
    path: str  # the URL path, %-decoded ("/org/model/resolve/<sha>/model.gguf")
    query: dict[str, str]  # first value of each query parameter
    headers: dict[str, str]  # request headers, lower-case names
    server: str  # "hub" or "cdn"


@dataclass
class _Fault:
    filename: str
    kind: str  # "drop" | "status" | "corrupt"
    remaining: int
    after_bytes: int = 0
    status: int = 503


@dataclass
class _Blob:
    data: bytes
    sha256: str
    git_oid: str  # git blob sha of the file (regular) or of its LFS pointer
    lfs: bool
    pointer_size: int = 0


@dataclass
class _Revision:
    commit: str
    files: dict[str, _Blob] = field(default_factory=dict)


@dataclass
class _Dataset:
    private: bool
    history: list[_Revision] = field(default_factory=list)  # main's commits, oldest first

    @property
    def main(self) -> _Revision:
        return self.history[-1]


def _regular_blob(data: bytes) -> _Blob:
    return _Blob(data, hashlib.sha256(data).hexdigest(), git_blob_sha(data), False)


class FakeHub:
    """An in-process fake Hub: `start()` returns its endpoint URL; `stop()` closes both listeners."""

    def __init__(self, repos: RepoMap | None = None, *, gated: dict[str, str] | None = None,
                 lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES):
        self._lock = threading.Lock()
        self._repos: dict[str, dict[str, _Revision]] = {}
        self._blobs_by_sha256: dict[str, _Blob] = {}
        self.gated: dict[str, str] = dict(gated or {})  # repo id -> the token that grants access
        self.lfs_suffixes = lfs_suffixes
        self.requests: list[LoggedRequest] = []
        self._faults: list[_Fault] = []
        # Called in the server thread with the request just before a file's bytes are sent (tests use it to
        # look at the client's cache while a download is under way).
        self.before_download: Callable[[LoggedRequest], None] | None = None
        self._servers: list[ThreadingHTTPServer] = []
        self._datasets: dict[str, _Dataset] = {}
        self.tokens: dict[str, tuple[str, bool]] = {}  # token -> (user name = namespace, may write)
        self._commit_faults: list[list] = []  # [status, times left]
        self.endpoint: str | None = None
        self.cdn: str | None = None
        for repo, revisions in (repos or {}).items():
            for rev, (sha, files) in revisions.items():
                self.add_revision(repo, rev, files, commit=sha)

    # --- content ---
    def add_revision(self, repo: str, revision: str, files: FileMap, commit: str | None = None) -> str:
        """Add (or replace) branch `revision` of `repo`; returns its commit sha."""
        sha = commit or commit_sha(f"{repo}@{revision}")
        rev = _Revision(sha)
        for name, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else bytes(content)
            sha256 = hashlib.sha256(data).hexdigest()
            lfs = name.lower().endswith(self.lfs_suffixes)
            if lfs:
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
                blob = _Blob(data, sha256, git_blob_sha(pointer), True, len(pointer))
            else:
                blob = _Blob(data, sha256, git_blob_sha(data), False)
            rev.files[name] = blob
            with self._lock:
                self._blobs_by_sha256[sha256] = blob
        with self._lock:
            self._repos.setdefault(repo, {})[revision] = rev
        return sha

    def add_step_branches(self, repo: str, steps, files: dict[int, FileMap] | None = None) -> None:
        """Add a branch stepN per step, cheaply: each holds a small config.json naming its step, unless `files`
        gives that step's files (e.g. a whole checkpoint for the steps a test downloads)."""
        for step in steps:
            chosen = (files or {}).get(step) or {"config.json": json.dumps({"step": step}).encode()}
            self.add_revision(repo, f"step{step}", chosen)

    def remove_repo(self, repo: str) -> None:
        with self._lock:
            self._repos.pop(repo, None)

    # --- datasets and tokens ---
    def add_token(self, token: str, user: str, write: bool = True) -> None:
        """A token of `user` (its namespace); `write=False` makes it read-only."""
        with self._lock:
            self.tokens[token] = (user, write)

    def add_dataset(self, repo: str, files: dict[str, bytes], private: bool = True) -> str:
        """Create dataset `repo` holding `files` (plus the Hub's .gitattributes); returns main's commit sha."""
        with self._lock:
            ds = _Dataset(private)
            self._datasets[repo] = ds
            return self._commit_dataset(repo, ds, {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n",
                                                   **files}, [])

    def dataset_files(self, repo: str) -> dict[str, bytes]:
        """The files on main of dataset `repo` ({} when there is no such dataset)."""
        with self._lock:
            ds = self._datasets.get(repo)
            return {n: b.data for n, b in ds.main.files.items()} if ds else {}

    def dataset_commits(self, repo: str) -> int:
        """How many commits main of dataset `repo` has (its creation included)."""
        with self._lock:
            ds = self._datasets.get(repo)
            return len(ds.history) if ds else 0

    def dataset_is_private(self, repo: str) -> bool | None:
        with self._lock:
            ds = self._datasets.get(repo)
            return ds.private if ds else None

    def fail_next_commit(self, status: int = 500, times: int = 1) -> None:
        """The next `times` commit POSTs (to any dataset) are answered with HTTP `status`, changing nothing."""
        with self._lock:
            self._commit_faults.append([status, times])

    def _take_commit_fault(self) -> int | None:
        with self._lock:
            for f in self._commit_faults:
                if f[1] > 0:
                    f[1] -= 1
                    return f[0]
        return None

    def _commit_dataset(self, repo: str, ds: _Dataset, added: dict[str, bytes], deleted: list[str]) -> str:
        """Apply a commit on top of main (caller holds the lock); returns its sha."""
        files = dict(ds.history[-1].files) if ds.history else {}
        for name in deleted:
            files.pop(name, None)
        for name, data in added.items():
            files[name] = _regular_blob(data)
        sha = commit_sha(f"{repo}#{len(ds.history)}#" + "".join(sorted(b.git_oid for b in files.values())))
        ds.history.append(_Revision(sha, files))
        return sha

    # --- faults ---
    def fail_next_download(self, filename: str, after_bytes: int, times: int = 1) -> None:
        """The next `times` GETs of `filename` (its path in the repo) send headers promising the whole body,
        then `after_bytes` bytes, then the connection is cut."""
        with self._lock:
            self._faults.append(_Fault(filename, "drop", times, after_bytes=after_bytes))

    def refuse_next_download(self, filename: str, status: int = 503, times: int = 1) -> None:
        """The next `times` GETs of `filename` get HTTP `status` (e.g. the CDN is down)."""
        with self._lock:
            self._faults.append(_Fault(filename, "status", times, status=status))

    def corrupt_next_download(self, filename: str, times: int = 1) -> None:
        """The next `times` GETs of `filename` deliver the right length with one byte flipped."""
        with self._lock:
            self._faults.append(_Fault(filename, "corrupt", times))

    def _take_fault(self, filename: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.filename == filename and f.remaining > 0:
                    f.remaining -= 1
                    return f
        return None

    # --- lookups ---
    def _revision(self, repo: str, rev: str) -> _Revision | None:
        with self._lock:
            revs = self._repos.get(repo, {})
            if rev in revs:
                return revs[rev]
            return next((r for r in revs.values() if r.commit == rev), None)

    def downloads_of(self, filename: str) -> list[LoggedRequest]:
        """The GET requests that fetched `filename`'s bytes (resolve GETs of regular files and CDN GETs)."""
        out = []
        for r in list(self.requests):
            if r.method != "GET":
                continue
            if r.server == "cdn" and r.query.get("file") == filename:
                out.append(r)
            elif r.server == "hub" and "/resolve/" in r.path and r.path.endswith("/" + filename):
                out.append(r)
        return out

    # --- lifecycle ---
    def start(self) -> str:
        """Start the Hub and CDN listeners on 127.0.0.1 (free ports); returns the Hub endpoint URL."""
        if self._servers:
            return self.endpoint  # type: ignore[return-value]
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self, role))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True,
                             name=f"fakehub-{role}").start()
            self._servers.append(server)
        self.endpoint = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self.endpoint

    def stop(self) -> None:
        """Stop both listeners; afterwards connections to the endpoint are refused."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def __enter__(self) -> "FakeHub":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.hub = hub
    Handler.role = role
    return Handler


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped server leaves no kept-alive socket that still answers.
    protocol_version = "HTTP/1.0"
    hub: FakeHub
    role: str

    def log_message(self, format, *args):  # noqa: A002 - silence stderr; requests are in hub.requests
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # --- plumbing ---
    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self._logged = LoggedRequest(method, unquote(parts.path), query,
                                     {k.lower(): v for k, v in self.headers.items()}, self.role)
        with self.hub._lock:
            self.hub.requests.append(self._logged)
        segments = parts.path.split("/")[1:]
        try:
            if self.role == "hub" and self._dataset_routes(method, segments, query):
                pass
            elif method == "POST":
                self._error(404, None, "Not Found")
            elif self.role == "cdn":
                self._cdn(method, segments, query)
            elif segments[:2] == ["api", "models"] and len(segments) >= 4:
                self._api(method, segments[2:], query)
            elif len(segments) >= 5 and segments[2] == "resolve":
                self._resolve(method, "/".join(segments[:2]), unquote(segments[3]),
                              unquote("/".join(segments[4:])))
            else:
                self._error(404, None, "Not Found")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _json(self, obj, head_only: bool = False) -> None:
        self._send(200, json.dumps(obj).encode(), head_only=head_only)

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None,
               head_only: bool = False) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head_only=head_only)

    def _check_repo(self, repo: str, head_only: bool = False) -> bool:
        """True if the caller may see `repo`; otherwise the Hub's error has been sent."""
        with self.hub._lock:
            exists = repo in self.hub._repos
        if not exists:
            self._error(401, "RepoNotFound", "Repository not found", head_only=head_only)
            return False
        token = self.hub.gated.get(repo)
        if token is not None:
            auth = self.headers.get("Authorization", "")
            if not auth:
                self._error(401, "GatedRepo", f"Access to model {repo} is restricted. You must have access to it "
                                              f"and be authenticated to access it. Please log in.", head_only=head_only)
                return False
            if auth != f"Bearer {token}":
                self._error(403, "GatedRepo", f"Access to model {repo} is restricted and you are not in the "
                                              f"authorized list.", head_only=head_only)
                return False
        return True

    # --- /api/models/{repo}/... ---
    def _api(self, method: str, segs: list[str], query: dict[str, str]) -> None:
        head_only = method == "HEAD"
        repo, rest = "/".join(segs[:2]), segs[2:]
        if not self._check_repo(repo, head_only):
            return
        if not rest or rest[0] == "revision":
            rev_name = unquote(rest[1]) if len(rest) >= 2 else "main"
            rev = self.hub._revision(repo, rev_name)
            if rev is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev_name}", head_only=head_only)
                return
            self._json({"id": repo, "modelId": repo, "sha": rev.commit, "private": False,
                        "gated": "manual" if repo in self.hub.gated else False, "disabled": False,
                        "lastModified": "2024-01-01T00:00:00.000Z", "tags": [], "library_name": "transformers",
                        "siblings": [{"rfilename": f} for f in sorted(rev.files)]}, head_only)
        elif rest[0] == "refs":
            with self.hub._lock:
                revs = dict(self.hub._repos[repo])
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": r.commit} for n, r in revs.items()]
            self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": []}, head_only)
        elif rest[0] == "tree" and len(rest) >= 2:
            rev_name = unquote(rest[1])
            rev = self.hub._revision(repo, rev_name)
            if rev is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev_name}", head_only=head_only)
                return
            prefix = unquote("/".join(rest[2:])).strip("/")
            recursive = query.get("recursive", "false").lower() in ("true", "1")
            self._json(self._tree(rev, prefix, recursive), head_only)
        else:
            self._error(404, None, "Not Found", head_only=head_only)

    def _tree(self, rev: _Revision, prefix: str, recursive: bool) -> list[dict]:
        base = prefix + "/" if prefix else ""
        entries: dict[str, dict] = {}
        for name, blob in sorted(rev.files.items()):
            if not name.startswith(base):
                continue
            rel = name[len(base):]
            if "/" in rel:
                # Folders on the way to this file (all of them if recursive, else only the first level).
                parts = rel.split("/")[:-1]
                for i in range(1, len(parts) + 1 if recursive else 2):
                    folder = base + "/".join(parts[:i])
                    entries.setdefault(folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                                "size": 0, "path": folder})
                if not recursive:
                    continue
            entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": name}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": blob.pointer_size}
            entries[name] = entry
        return list(entries.values())

    # --- /{repo}/resolve/{rev}/{file} ---
    def _resolve(self, method: str, repo: str, rev_name: str, filename: str) -> None:
        head_only = method == "HEAD"
        if not self._check_repo(repo, head_only):
            return
        rev = self.hub._revision(repo, rev_name)
        if rev is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev_name}", head_only=head_only)
            return
        blob = rev.files.get(filename)
        if blob is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist on \"{rev_name}\"",
                        {"X-Repo-Commit": rev.commit}, head_only=head_only)
            return
        if blob.lfs:
            location = f"{self.hub.cdn}/lfs/{blob.sha256}?file={quote(filename)}&commit={rev.commit}"
            self._send(302, b"", {"Location": location, "X-Repo-Commit": rev.commit, "ETag": f'"{blob.git_oid}"',
                                  "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))},
                       content_type="text/plain", head_only=True)
            return
        self._bytes(method, blob.data, filename, {"ETag": f'"{blob.git_oid}"', "X-Repo-Commit": rev.commit})

    # --- CDN: /lfs/{sha256} ---
    def _cdn(self, method: str, segs: list[str], query: dict[str, str]) -> None:
        blob = self.hub._blobs_by_sha256.get(segs[1]) if len(segs) == 2 and segs[0] == "lfs" else None
        if blob is None:
            self._send(404, b"NoSuchKey", content_type="text/plain", head_only=method == "HEAD")
            return
        self._bytes(method, blob.data, query.get("file", ""), {"ETag": f'"{blob.sha256}"'})

    def _bytes(self, method: str, data: bytes, filename: str, headers: dict[str, str]) -> None:
        """Send `data` (or the part a Range header asks for), applying any fault armed for `filename`."""
        start, end = 0, len(data)
        status = 200
        extra = dict(headers, **{"Accept-Ranges": "bytes"})
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[len("bytes="):].partition("-")
            start = int(first or 0)
            end = int(last) + 1 if last else len(data)
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, content_type="text/plain")
                return
            end = min(end, len(data))
            status = 206
            extra["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        if method == "HEAD":
            self._send(status, body, extra, content_type="application/octet-stream", head_only=True)
            return
        if self.hub.before_download is not None:
            self.hub.before_download(self._logged)
        fault = self.hub._take_fault(filename)
        if fault is not None and fault.kind == "status":
            self._send(fault.status, b"Service Unavailable", content_type="text/plain")
            return
        if fault is not None and fault.kind == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if fault is not None and fault.kind == "drop":
            self.wfile.write(body[:fault.after_bytes])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        for i in range(0, len(body), 1 << 16):
            self.wfile.write(body[i:i + (1 << 16)])


# ------------------------------------------------------------------------------------------ dataset repos
def _dataset_routes(self: _Handler, method: str, segments: list[str], query: dict[str, str]) -> bool:
    """Serve the dataset endpoints; False when the path is not one of them."""
    head_only = method == "HEAD"
    if segments == ["api", "repos", "create"] and method == "POST":
        self._create_repo()
    elif segments[:2] == ["api", "datasets"] and len(segments) >= 4:
        repo, rest = "/".join(segments[2:4]), segments[4:]
        if method == "POST" and len(rest) >= 2 and rest[0] in ("preupload", "commit"):
            ds = self._dataset_for_write(repo)
            if ds is not None:
                (self._preupload if rest[0] == "preupload" else self._commit)(repo, ds, unquote(rest[1]))
        elif method == "POST":
            self._error(404, None, "Not Found")
        else:
            ds = self._dataset_for_read(repo, head_only)
            if ds is None:
                return True
            if not rest or rest[0] == "revision":
                rev = self._dataset_revision(ds, unquote(rest[1]) if len(rest) >= 2 else "main", head_only)
                if rev is not None:
                    self._json({"id": repo, "author": repo.split("/")[0], "sha": rev.commit, "private": ds.private,
                                "gated": False, "disabled": False, "lastModified": "2024-01-01T00:00:00.000Z",
                                "tags": [], "downloads": 0, "likes": 0,
                                "siblings": [{"rfilename": f} for f in sorted(rev.files)]}, head_only)
            elif rest[0] == "tree" and len(rest) >= 2:
                rev = self._dataset_revision(ds, unquote(rest[1]), head_only)
                if rev is not None:
                    recursive = query.get("recursive", "false").lower() in ("true", "1")
                    self._json(self._tree(rev, unquote("/".join(rest[2:])).strip("/"), recursive), head_only)
            else:
                self._error(404, None, "Not Found", head_only=head_only)
    elif segments[:1] == ["datasets"] and len(segments) >= 6 and segments[3] == "resolve" and method != "POST":
        ds = self._dataset_for_read("/".join(segments[1:3]), head_only)
        if ds is None:
            return True
        rev = self._dataset_revision(ds, unquote(segments[4]), head_only)
        if rev is None:
            return True
        filename = unquote("/".join(segments[5:]))
        blob = rev.files.get(filename)
        if blob is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist on \"{segments[4]}\"",
                        {"X-Repo-Commit": rev.commit}, head_only=head_only)
        else:
            self._bytes(method, blob.data, filename, {"ETag": f'"{blob.git_oid}"', "X-Repo-Commit": rev.commit})
    else:
        return False
    return True


def _caller(self: _Handler):
    """(user, may write) of the request's token; None when anonymous; False (401 sent) for an unknown token."""
    auth = self.headers.get("Authorization", "")
    if not auth:
        return None
    token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
    with self.hub._lock:
        found = self.hub.tokens.get(token)
    if found is None:
        self._error(401, None, "Invalid credentials in Authorization header", head_only=self.command == "HEAD")
        return False
    return found


def _dataset_for_read(self: _Handler, repo: str, head_only: bool = False):
    caller = self._caller()
    if caller is False:
        return None
    with self.hub._lock:
        ds = self.hub._datasets.get(repo)
    if ds is None or (ds.private and (caller is None or caller[0] != repo.split("/")[0])):
        self._error(401 if caller is None else 404, "RepoNotFound", "Repository not found", head_only=head_only)
        return None
    return ds


def _dataset_for_write(self: _Handler, repo: str):
    ds = self._dataset_for_read(repo)
    if ds is None:
        return None
    caller = self._caller()
    if caller is None:
        self._error(401, None, "You must be authenticated to write to this repo")
        return None
    if not caller[1] or caller[0] != repo.split("/")[0]:
        self._error(403, None, f"You don't have the rights to write to datasets/{repo}")
        return None
    return ds


def _dataset_revision(self: _Handler, ds: _Dataset, rev: str, head_only: bool = False):
    with self.hub._lock:
        found = ds.main if rev == "main" else next((r for r in ds.history if r.commit == rev), None)
    if found is None:
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head_only=head_only)
    return found


def _body(self: _Handler) -> bytes:
    length = int(self.headers.get("Content-Length") or 0)
    return self.rfile.read(length) if length > 0 else b""


def _create_repo(self: _Handler) -> None:
    try:
        payload = json.loads(self._body() or b"{}")
    except ValueError:
        self._error(400, None, "Invalid JSON body")
        return
    caller = self._caller()
    if caller is False:
        return
    org, name = payload.get("organization"), payload.get("name")
    if caller is None:
        self._error(401, None, "You must be authenticated to create a repo")
        return
    org = org or caller[0]
    repo = f"{org}/{name}"
    if payload.get("type") != "dataset":
        self._error(400, None, "The fake Hub creates dataset repos only")
        return
    if not caller[1] or org != caller[0]:
        self._error(403, None, f"You don't have the rights to create a dataset under the namespace \"{org}\"")
        return
    with self.hub._lock:
        if repo in self.hub._datasets:
            exists = True
        else:
            exists = False
            private = payload.get("visibility") == "private" or payload.get("private") is True
            ds = _Dataset(private)
            self.hub._datasets[repo] = ds
            self.hub._commit_dataset(repo, ds, {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"},
                                     [])
    if exists:  # the Hub's 409 body also carries the url, which create_repo(exist_ok=True) reads
        message = "You already created this dataset repo"
        self._send(409, json.dumps({"error": message, "url": f"{self.hub.endpoint}/datasets/{repo}"}).encode(),
                   {"X-Error-Message": message})
        return
    self._json({"url": f"{self.hub.endpoint}/datasets/{repo}", "name": repo, "id": repo})


def _preupload(self: _Handler, repo: str, ds: _Dataset, rev: str) -> None:
    try:
        files = json.loads(self._body())["files"]
    except (ValueError, KeyError, TypeError):
        self._error(400, None, "Invalid preupload body")
        return
    with self.hub._lock:
        have = ds.main.files
        out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                "oid": have[f["path"]].git_oid if f["path"] in have else None} for f in files]
    self._json({"files": out, "commitOid": ds.main.commit})


def _commit(self: _Handler, repo: str, ds: _Dataset, rev: str) -> None:
    body = self._body()
    status = self.hub._take_commit_fault()
    if status is not None:
        self._error(status, None, "Internal Error - We're working hard to fix this as soon as possible!")
        return
    if rev != "main":
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return
    added: dict[str, bytes] = {}
    deleted: list[str] = []
    try:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise ValueError("no header line")
        for item in lines[1:]:
            value = item["value"]
            if item["key"] == "file" and value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                deleted.append(value["path"])
            else:
                raise ValueError(f"the fake Hub does not take {item['key']!r} operations")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        self._error(400, None, f"Invalid commit body: {e}")
        return
    with self.hub._lock:
        sha = self.hub._commit_dataset(repo, ds, added, deleted)
    self._json({"commitUrl": f"{self.hub.endpoint}/datasets/{repo}/commit/{sha}", "commitOid": sha,
                "pullRequestUrl": None})


for _f in (_dataset_routes, _caller, _dataset_for_read, _dataset_for_write, _dataset_revision, _body, _create_repo,
           _preupload, _commit):
    setattr(_Handler, _f.__name__, _f)
