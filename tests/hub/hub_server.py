"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for offline tests with the real HF clients.

Usage (tests normally take the session fixture ``hub`` from ``tests/conftest.py``, which has already set
``HF_ENDPOINT``/``HF_TOKEN``/``HF_HOME``/``HF_HUB_DISABLE_XET=1`` ... before any HF library was imported)::

    def test_something(hub):            # hub: HubServer, already running
        from huggingface_hub import HfApi
        api = HfApi()                   # endpoint + token come from the environment
        api.create_repo("user/demo", repo_type="dataset")
        hub.endpoint, hub.token         # "http://127.0.0.1:PORT", the accepted bearer token
        hub.requests                    # list of (method, path, status) seen so far (append-only)

Standalone: ``server = HubServer(token="t").start(); ...; server.stop()`` (pass ``sock=`` a pre-bound socket to
fix the port before starting).

What it implements (shapes measured in docs hf-integration.md §1): models / datasets / spaces repos with history
(every commit is a full path -> entry map, so old revisions keep resolving), branches and tags, regular files
(git-sha1 blobs) and LFS files (sha256 objects via the LFS batch API + PUT + verify, served through a 302 to
``localhost:PORT`` i.e. another origin, like the Hub's CDN), preupload, ndjson commits, resolve with HEAD/GET/Range,
tree listing, paths-info, repo info (sha, siblings, cardData, ``...fffZ`` dates), refs, commit list, tag/branch
creation, validate-yaml, create/delete repo (409 with ``url`` when it exists), whoami-v2, and stubs for telemetry and
agent-harnesses. Errors carry ``X-Error-Code`` RepoNotFound / RevisionNotFound / EntryNotFound.

Auth: every write (create/delete repo, preupload, commit, LFS batch/verify, tag, branch) needs
``Authorization: Bearer <token>``; otherwise 401 "Invalid credentials in Authorization header". Reads of public repos
are open; private repos look like RepoNotFound without the token. Repo ids must be ``namespace/name``.
Set ``server.ignore_range = True`` to emulate a server without Range support.
"""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import hashlib
import json
import re
import socket
import threading
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REPO_TYPES = ("model", "dataset", "space")
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.model", "*.msgpack", "*.npy",
    "*.npz", "*.onnx", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.safetensors", "*.tar",
    "*.tgz", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.root", "*.png", "*.jpg", "*.jpeg", "*.webp", "*.gif",
)
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
BAD_CREDENTIALS = "Invalid credentials in Authorization header"  # exact text: huggingface_hub keeps it a plain 401
NULL_SHA = "0" * 40


def hub_date(ts: float) -> str:
    """Hub date format `YYYY-MM-DDTHH:MM:SS.fffZ` (huggingface_hub rejects `+00:00`)."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def git_blob_sha1(data: bytes) -> str:
    """Git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file stored in git in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file in one commit: `oid` is the git blob id (of the pointer for LFS files)."""

    path: str
    size: int
    oid: str
    sha256: str | None = None  # set for LFS files

    def tree_json(self) -> dict:
        """Tree-listing form of this file."""
        out = {"type": "file", "path": self.path, "size": self.size, "oid": self.oid}
        if self.sha256:
            pointer_size = len(lfs_pointer(self.sha256, self.size))
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return out


@dataclasses.dataclass
class Commit:
    """A full snapshot: every path of the repo at this commit."""

    sha: str
    parent: str | None
    title: str
    message: str
    date: float
    files: dict[str, Entry]


@dataclasses.dataclass
class Repo:
    """A repository with its whole history, branches and tags."""

    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None
    created: float
    commits: dict[str, Commit] = dataclasses.field(default_factory=dict)
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """Commit for a branch, tag, `refs/heads|tags/x` or full 40-hex sha; None if unknown."""
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix):
                revision = revision[len(prefix):]
                return self.commits.get(table[revision]) if revision in table else None
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)


class HubError(Exception):
    """An HTTP error answer with the Hub's `X-Error-Code` header."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        """As a JSON response."""
        headers = dict(self.headers)
        if self.code:
            headers["X-Error-Code"] = self.code
        headers["X-Error-Message"] = self.message
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


def _repo_url_prefix(repo_type: str) -> str:
    return {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]


def _parse_range(header: str, total: int) -> tuple[int, int] | None:
    """(start, end inclusive) for `bytes=a-b`, `bytes=a-`, `bytes=-n`; raises 416 past the end."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(total - int(last), 0), total - 1
    else:
        start, end = int(first), min(int(last), total - 1) if last else total - 1
    if start >= total or start > end:
        raise HubError(416, f"range {header!r} not satisfiable for {total} bytes",
                       headers={"Content-Range": f"bytes */{total}"})
    return start, end


class HubServer:
    """In-memory Hub on 127.0.0.1; `start()` runs uvicorn in a daemon thread. See the module docstring."""

    def __init__(self, token: str = "hf_loopback_test_token", user: str = "tester", sock: socket.socket | None = None):
        self.token, self.user = token, user
        self.sock = sock or self.bind_socket()
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}"  # another origin: HEAD keeps the 302's metadata, GET drops auth
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}  # git sha1 -> content (regular files)
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[tuple[str, str, int]] = []
        self.ignore_range = False
        self._lock = threading.RLock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        methods = ["GET", "HEAD", "POST", "PUT", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    @staticmethod
    def bind_socket() -> socket.socket:
        """A socket bound to 127.0.0.1 on a free port (so the port is known before the server runs)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        return sock

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 20.0) -> HubServer:
        """Serve in a daemon thread; returns once uvicorn reports started."""
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                        name=f"loopback-hub-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"loopback Hub did not start on {self.endpoint}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
        self.sock.close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- direct (test-side) access
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored repo (raises KeyError if absent)."""
        return self.repos[(repo_type, repo_id)]

    # ---------------------------------------------------------------- dispatch
    async def _handle(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        segments = [unquote(s) for s in raw.decode("ascii").split("?")[0].split("/")[1:]]
        try:
            response = await self._dispatch(request, segments)
        except HubError as err:
            response = err.response()
        self.requests.append((request.method, request.url.path, response.status_code))
        return response

    async def _dispatch(self, request: Request, seg: list[str]) -> Response:
        method = request.method
        if seg[:1] == ["api"]:
            return await self._dispatch_api(request, seg[1:])
        if seg[:1] == ["lfs-upload"] and method == "PUT":
            return await self._lfs_put(request, seg[1])
        if seg[:1] == ["lfs-cdn"] and method in ("GET", "HEAD"):
            return self._serve_bytes(request, self._lfs_bytes(seg[1]), {"ETag": f'"{seg[1]}"'})
        repo_type, rest = self._split_type(seg, "model")
        if len(rest) >= 2 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]:
            return await self._lfs_batch(request, repo_type, f"{rest[0]}/{rest[1][:-4]}")
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(request, repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        raise HubError(404, f"no route for {method} /{'/'.join(seg)}")

    @staticmethod
    def _split_type(seg: list[str], default: str | None) -> tuple[str | None, list[str]]:
        if seg and seg[0] in ("models", "datasets", "spaces"):
            return seg[0][:-1], seg[1:]
        return default, seg

    async def _dispatch_api(self, request: Request, seg: list[str]) -> Response:
        method = request.method
        if seg[:1] == ["telemetry"]:
            return JSONResponse({})
        if seg == ["agent-harnesses"]:
            return JSONResponse({"standardEnvVars": [], "harnesses": {}})
        if seg == ["whoami-v2"]:
            self._require_token(request)
            return JSONResponse({"type": "user", "name": self.user, "fullname": self.user, "orgs": [],
                                 "auth": {"type": "access_token",
                                          "accessToken": {"displayName": "loopback", "role": "write"}}})
        if seg[:1] == ["lfs-verify"] and method == "POST" and len(seg) == 2:
            self._require_token(request)
            self._lfs_bytes(seg[1])
            return JSONResponse({})
        if seg == ["validate-yaml"] and method == "POST":
            return await self._validate_yaml(request)
        if seg == ["repos", "create"] and method == "POST":
            return await self._create_repo(request)
        if seg == ["repos", "delete"] and method == "DELETE":
            return await self._delete_repo(request)
        repo_type, rest = self._split_type(seg, None)
        if repo_type is None or len(rest) < 2:
            raise HubError(404, f"no route for {method} /api/{'/'.join(seg)}")
        repo_id, action, args = f"{rest[0]}/{rest[1]}", (rest[2] if len(rest) > 2 else None), rest[3:]
        if action is None and method == "GET":
            return self._info(request, repo_type, repo_id, "main")
        if action == "revision" and method == "GET" and args:
            return self._info(request, repo_type, repo_id, args[0])
        if action == "tree" and method == "GET" and args:
            return self._tree(request, repo_type, repo_id, args[0], "/".join(args[1:]))
        if action == "paths-info" and method == "POST" and args:
            return await self._paths_info(request, repo_type, repo_id, args[0])
        if action == "preupload" and method == "POST" and args:
            return await self._preupload(request, repo_type, repo_id, args[0])
        if action == "commit" and method == "POST" and args:
            return await self._commit(request, repo_type, repo_id, args[0])
        if action == "refs" and method == "GET":
            return self._refs(request, repo_type, repo_id)
        if action == "commits" and method == "GET" and args:
            return self._commits(request, repo_type, repo_id, args[0])
        if action in ("tag", "branch") and args:
            return await self._ref_write(request, repo_type, repo_id, action, args[0])
        if action == "runtime" and method == "GET":
            self._get_repo(request, repo_type, repo_id)
            return JSONResponse({"stage": "RUNNING", "hardware": {"current": "cpu-basic", "requested": "cpu-basic"}})
        raise HubError(404, f"no route for {method} /api/{'/'.join(seg)}")

    # ---------------------------------------------------------------- helpers
    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {self.token}"

    def _require_token(self, request: Request) -> None:
        if not self._authorized(request):
            raise HubError(401, BAD_CREDENTIALS)

    def _get_repo(self, request: Request, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._authorized(request)):
            raise HubError(404, f"Repository Not Found for {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _get_commit(self, request: Request, repo_type: str, repo_id: str, revision: str) -> tuple[Repo, Commit]:
        repo = self._get_repo(request, repo_type, repo_id)
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, commit

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{_repo_url_prefix(repo_type)}{repo_id}"

    @staticmethod
    async def _json(request: Request) -> dict:
        try:
            return json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"invalid JSON body: {err}") from err

    def _lfs_bytes(self, sha256: str) -> bytes:
        data = self.lfs_objects.get(sha256)
        if data is None:
            raise HubError(404, f"LFS object {sha256} not found", "EntryNotFound")
        return data

    def _serve_bytes(self, request: Request, data: bytes, headers: dict, status: int = 200) -> Response:
        """200 or 206 (honouring Range unless `ignore_range`); HEAD gets headers only."""
        headers = {**headers, "Accept-Ranges": "bytes"}
        body = data
        range_header = request.headers.get("range")
        if range_header and not self.ignore_range:
            span = _parse_range(range_header, len(data))
            if span is not None:
                start, end = span
                body, status = data[start:end + 1], 206
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        headers["Content-Length"] = str(len(body))
        return Response(b"" if request.method == "HEAD" else body, status_code=status, headers=headers,
                        media_type="application/octet-stream")

    # ---------------------------------------------------------------- repos
    async def _create_repo(self, request: Request) -> Response:
        self._require_token(request)
        body = await self._json(request)
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"unknown repo type {repo_type!r}")
        if not body.get("name"):
            raise HubError(400, "missing repo name")
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        url = self._repo_url(repo_type, repo_id)
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
            if repo_type == "space" and not body.get("sdk"):
                raise HubError(400, "a Space needs an sdk")
            private = body.get("visibility", "public") != "public" or bool(body.get("private"))
            repo = Repo(repo_type, repo_id, private, body.get("sdk"), time.time())
            self.repos[(repo_type, repo_id)] = repo
            files = {".gitattributes": self._store_regular(".gitattributes", GITATTRIBUTES.encode())}
            self._add_commit(repo, "main", "initial commit", "", files)
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def _delete_repo(self, request: Request) -> Response:
        self._require_token(request)
        body = await self._json(request)
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.user}/{body.get('name')}"
        with self._lock:
            if self.repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, f"Repository Not Found for {repo_type} {repo_id}", "RepoNotFound")
        return JSONResponse({})

    def _info(self, request: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, commit = self._get_commit(request, repo_type, repo_id, revision)
        siblings = []
        for entry in sorted(commit.files.values(), key=lambda e: e.path):
            sib = {"rfilename": entry.path, "size": entry.size, "blobId": entry.oid}
            if entry.sha256:
                sib["lfs"] = {"sha256": entry.sha256, "size": entry.size,
                              "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sib)
        info = {"_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
                "sha": commit.sha, "private": repo.private, "gated": False, "disabled": False, "downloads": 0,
                "likes": 0, "tags": [], "siblings": siblings, "createdAt": hub_date(repo.created),
                "lastModified": hub_date(commit.date), "cardData": self._card_data(commit)}
        if repo_type == "space":
            info.update(sdk=repo.sdk, runtime={"stage": "RUNNING", "hardware": {"current": "cpu-basic"}})
        return JSONResponse(info)

    def _card_data(self, commit: Commit) -> dict | None:
        entry = commit.files.get("README.md")
        if entry is None or entry.sha256:
            return None
        text = self.blobs[entry.oid].decode("utf-8", "replace")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError:
            return None
        return data if isinstance(data, dict) else None

    # ---------------------------------------------------------------- trees and files
    def _tree(self, request: Request, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        _, commit = self._get_commit(request, repo_type, repo_id, revision)
        recursive = request.query_params.get("recursive", "false").lower() in ("1", "true")
        return JSONResponse(self._list_dir(commit, path.strip("/"), recursive))

    def _list_dir(self, commit: Commit, path: str, recursive: bool) -> list[dict]:
        prefix = f"{path}/" if path else ""
        below = [e for p, e in commit.files.items() if p.startswith(prefix)]
        if path and not below:
            raise HubError(404, f"{path} does not exist on this revision", "EntryNotFound")
        files, dirs = [], set()
        for entry in below:
            parts = entry.path[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                dirs.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                files.append(entry.tree_json())
        dir_json = [{"type": "directory", "path": d, "size": 0,
                     "oid": hashlib.sha1(f"{commit.sha}:{d}".encode()).hexdigest()} for d in dirs]
        return sorted(dir_json, key=lambda d: d["path"]) + sorted(files, key=lambda f: f["path"])

    async def _paths_info(self, request: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        _, commit = self._get_commit(request, repo_type, repo_id, revision)
        body = (await request.body()).decode()
        if request.headers.get("content-type", "").startswith("application/json"):
            paths = json.loads(body or "{}").get("paths", [])
        else:
            paths = parse_qs(body).get("paths", [])
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(commit.files[path].tree_json())
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append({"type": "directory", "path": path, "size": 0,
                            "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest()})
        return JSONResponse(out)

    def _resolve(self, request: Request, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        repo, commit = self._get_commit(request, repo_type, repo_id, revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha}
        if entry.sha256:
            headers.update({"Location": f"{self.cdn}/lfs-cdn/{entry.sha256}", "X-Linked-Etag": f'"{entry.sha256}"',
                            "X-Linked-Size": str(entry.size), "ETag": f'"{entry.oid}"', "Content-Length": "0"})
            return Response(b"", status_code=302, headers=headers)
        return self._serve_bytes(request, self.blobs[entry.oid], {**headers, "ETag": f'"{entry.oid}"'})

    # ---------------------------------------------------------------- uploads
    def _is_lfs(self, path: str, size: int, sample: bytes, commit: Commit) -> bool:
        patterns = list(LFS_PATTERNS)
        attrs = commit.files.get(".gitattributes")
        if attrs is not None and not attrs.sha256:
            patterns += [ln.split()[0] for ln in self.blobs[attrs.oid].decode().splitlines()
                         if "filter=lfs" in ln and ln.split()]
        name = path.rsplit("/", 1)[-1]
        return (size >= LFS_SIZE_THRESHOLD or b"\0" in sample
                or any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns))

    async def _preupload(self, request: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        self._require_token(request)
        _, commit = self._get_commit(request, repo_type, repo_id, revision)
        body = await self._json(request)
        out = []
        for item in body.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            sample = base64.b64decode(item.get("sample", ""))
            lfs = self._is_lfs(path, size, sample, commit)
            current = commit.files.get(path)
            oid = None if current is None else (current.sha256 if lfs else current.oid)
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return JSONResponse({"files": out, "commitOid": commit.sha})

    async def _lfs_batch(self, request: Request, repo_type: str, repo_id: str) -> Response:
        self._require_token(request)
        self._get_repo(request, repo_type, repo_id)
        body = await self._json(request)
        if body.get("operation") != "upload":
            raise HubError(400, "only the LFS upload operation is implemented")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            answer = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.lfs_objects:  # no `actions` for stored objects: the client skips the PUT
                answer["actions"] = {"upload": {"href": f"{self.cdn}/lfs-upload/{oid}", "header": {}},
                                     "verify": {"href": f"{self.endpoint}/api/lfs-verify/{oid}", "header": {}}}
            objects.append(answer)
        return JSONResponse({"transfer": "basic", "objects": objects},
                            headers={"Content-Type": "application/vnd.git-lfs+json"})

    async def _lfs_put(self, request: Request, oid: str) -> Response:
        data = await request.body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"uploaded bytes do not hash to sha256 {oid}")
        with self._lock:
            self.lfs_objects[oid] = data
        return Response(b"", status_code=200)

    async def _commit(self, request: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        self._require_token(request)
        repo, head = self._get_commit(request, repo_type, repo_id, revision)
        if revision not in repo.branches:
            raise HubError(400, f"can only commit to a branch, not {revision!r}")
        if request.query_params.get("create_pr") in ("1", "true", "True"):
            raise HubError(400, "pull requests are not implemented by the loopback Hub")
        lines = [json.loads(ln) for ln in (await request.body()).decode().splitlines() if ln.strip()]
        header = next((ln["value"] for ln in lines if ln.get("key") == "header"), {})
        files = dict(head.files)
        for line in lines:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                content = base64.b64decode(value["content"]) if value.get("encoding", "base64") == "base64" \
                    else value["content"].encode()
                files[value["path"]] = self._store_regular(value["path"], content)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                pointer = lfs_pointer(value["oid"], int(value["size"]))
                files[value["path"]] = Entry(value["path"], int(value["size"]), git_blob_sha1(pointer), value["oid"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"cannot delete {value['path']}: not in the repo", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: e for p, e in files.items() if not p.startswith(prefix)}
            elif key not in ("header", None):
                raise HubError(400, f"unknown commit operation {key!r}")
        with self._lock:
            parent = header.get("parentCommit")
            if parent and parent != repo.branches[revision]:
                raise HubError(412, f"parentCommit {parent} is not the head of {revision}")
            sha = self._add_commit(repo, revision, header.get("summary") or "commit",
                                   header.get("description") or "", files)
        return JSONResponse({"commitOid": sha, "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{sha}",
                             "pullRequestUrl": None})

    def _store_regular(self, path: str, content: bytes) -> Entry:
        oid = git_blob_sha1(content)
        self.blobs[oid] = content
        return Entry(path, len(content), oid)

    def _add_commit(self, repo: Repo, branch: str, title: str, message: str, files: dict[str, Entry]) -> str:
        parent = repo.branches.get(branch)
        now = time.time()
        payload = json.dumps([parent, title, message, now, sorted((p, e.oid) for p, e in files.items())])
        sha = hashlib.sha1(payload.encode()).hexdigest()
        repo.commits[sha] = Commit(sha, parent, title, message, now, files)
        repo.branches[branch] = sha
        return sha

    # ---------------------------------------------------------------- refs and history
    def _refs(self, request: Request, repo_type: str, repo_id: str) -> Response:
        repo = self._get_repo(request, repo_type, repo_id)
        return JSONResponse({
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
            "converts": [], "pullRequests": []})

    def _commits(self, request: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, commit = self._get_commit(request, repo_type, repo_id, revision)
        out = []
        while commit is not None:
            out.append({"id": commit.sha, "title": commit.title, "message": commit.message,
                        "date": hub_date(commit.date), "authors": [{"user": self.user}]})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return JSONResponse(out)

    async def _ref_write(self, request: Request, repo_type: str, repo_id: str, kind: str, name: str) -> Response:
        self._require_token(request)
        repo = self._get_repo(request, repo_type, repo_id)
        table = repo.tags if kind == "tag" else repo.branches
        with self._lock:
            if request.method == "DELETE":
                if table.pop(name, None) is None:
                    raise HubError(404, f"{kind} {name} not found", "RevisionNotFound")
                return JSONResponse({})
            body = await self._json(request)
            if kind == "tag":  # POST /tag/{revision} {"tag": name}
                commit = repo.resolve(name)
                new_name = body.get("tag")
            else:  # POST /branch/{name} {"startingPoint": rev}
                commit = repo.resolve(body.get("startingPoint") or "main")
                new_name = name
            if commit is None:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            if not new_name:
                raise HubError(400, f"missing {kind} name")
            if new_name in table:
                raise HubError(409, f"{kind} {new_name} already exists")
            table[new_name] = commit.sha
        return JSONResponse({})

    # ---------------------------------------------------------------- cards
    async def _validate_yaml(self, request: Request) -> Response:
        body = await self._json(request)
        content = body.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        if match:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as err:
                return JSONResponse({"errors": [{"message": f"invalid YAML: {err}"}]}, status_code=400)
            if meta is not None and not isinstance(meta, dict):
                return JSONResponse({"errors": [{"message": "YAML metadata must be a mapping"}]}, status_code=400)
        return JSONResponse({"errors": [], "warnings": []})
