"""A Hub-protocol server on loopback, for testing push and pull with huggingface_hub's own, unmodified client.

Standard library only; a test fixture, not part of the package. Start it with `HubServer().start()`; point clients at
it with `HF_ENDPOINT=server.url` and `HF_TOKEN=server.token`, exactly as users point at a private Hub, plus
`HF_HUB_DISABLE_XET=1` (huggingface_hub uploads through Xet whenever hf_xet is installed, without asking the server,
and this server speaks only the LFS protocol) and a temporary `HF_HOME`.

State lives in memory: repos with branches pointing at immutable commits (each a full {path: file} snapshot), and one
content-addressed LFS store. Endpoints, and why the client needs each:

| Method and path                                          | Used by                                              |
| -------------------------------------------------------- | ---------------------------------------------------- |
| GET  /api/whoami-v2                                      | `whoami`, token checks before pushes                 |
| POST /api/repos/create                                   | `create_repo` (409 when it exists: `exist_ok`)       |
| POST /api/validate-yaml                                  | commits of a README.md: its metadata block must close |
| GET  /api/models/{repo}[/revision/{rev}]                 | `model_info`/`repo_info`: sha, private, siblings     |
| GET  /api/models/{repo}/refs                             | `list_repo_refs`                                     |
| POST /api/models/{repo}/branch/{branch}                  | `create_branch` (push to a second branch)            |
| GET  /api/models/{repo}/tree/{rev}[/{path}]              | `list_repo_tree`, `list_repo_files`                  |
| POST /api/models/{repo}/paths-info/{rev}                 | `get_paths_info` (upload_folder's existing files)    |
| POST /api/models/{repo}/preupload/{rev}                  | commits: which files go through LFS                  |
| POST /{repo}.git/info/lfs/objects/batch                  | LFS batch API, basic transfer only (never xet)       |
| PUT  /lfs/{oid}                                          | LFS upload; stored only if the sha256 and size match |
| POST /lfs/verify                                         | LFS verify step                                      |
| POST /api/models/{repo}/commit/{rev}                     | the NDJSON commit; applied all at once or not at all |
| HEAD/GET /{repo}/resolve/{rev}/{path}                    | downloads: X-Repo-Commit, ETag, X-Linked-Etag/-Size  |

Errors answer like the Hub: 401 for writes without a valid `Authorization: Bearer` token; 404 with `X-Error-Code`
`RepoNotFound` (also for private repos seen without their owner's token), `RevisionNotFound` or `EntryNotFound`.
`drop_next(kind, count)` makes the server close the connection in the middle of the next `count` requests of a kind
("commit" or "lfs"), after reading part of the body, to test failures mid-upload.
"""

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


# Files the Hub's default .gitattributes sends through LFS, plus anything over 10 MB.
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".pkl",
    ".ckpt",
    ".h5",
    ".onnx",
    ".npz",
    ".npy",
    ".msgpack",
    ".zip",
    ".gz",
    ".tar",
)
LFS_SIZE = 10 * 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    size: int
    content: bytes | None = None  # regular files
    lfs_oid: str | None = None  # LFS files: sha256 of the content, kept in the server's LFS store

    @property
    def etag(self) -> str:
        if self.lfs_oid:
            return self.lfs_oid
        return hashlib.sha1(b"blob %d\0" % self.size + self.content).hexdigest()  # the git blob id, as the Hub


@dataclass
class Repo:
    repo_id: str
    owner: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)


class HubServer:
    def __init__(self, user: str = "lab", token: str = "hf_loopback_token"):
        self.user, self.token = user, token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.drops = {"commit": 0, "lfs": 0}
        self.requests: list[str] = []
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.hub = self
        self._http.daemon_threads = True
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def drop_next(self, kind: str, count: int = 1) -> None:
        self.drops[kind] = count

    # --- repository state, also used by tests to check what the server holds -----------------------------------

    def create_repo(self, repo_id: str, owner: str, private: bool) -> Repo:
        repo = Repo(repo_id, owner, private)
        initial = self._commit_id(repo_id, "initial", {})
        repo.commits[initial] = {".gitattributes": _regular(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")}
        repo.branches["main"] = initial
        self.repos[repo_id] = repo
        return repo

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        snapshot = repo.commits[repo.branches.get(revision, revision)]
        return {path: self.lfs[entry.lfs_oid] if entry.lfs_oid else entry.content for path, entry in snapshot.items()}

    def head(self, repo_id: str, branch: str = "main") -> str:
        return self.repos[repo_id].branches[branch]

    def corrupt(self, repo_id: str, path: str, content: bytes, branch: str = "main") -> str:
        """Commit `content` at `path` directly (e.g. a truncated safetensors file), bypassing the client."""
        with self.lock:
            repo = self.repos[repo_id]
            files = dict(repo.commits[repo.branches[branch]])
            oid = hashlib.sha256(content).hexdigest()
            self.lfs[oid] = content
            files[path] = StoredFile(len(content), lfs_oid=oid) if path.endswith(LFS_SUFFIXES) else _regular(content)
            return self._add_commit(repo, branch, files, "corrupt")

    def _commit_id(self, repo_id: str, summary: str, files: dict) -> str:
        seed = f"{repo_id}\0{summary}\0{time.time_ns()}\0{sorted(files)}"
        return hashlib.sha1(seed.encode()).hexdigest()

    def _add_commit(self, repo: Repo, branch: str, files: dict[str, StoredFile], summary: str) -> str:
        commit = self._commit_id(repo.repo_id, summary, files)
        repo.commits[commit] = files
        repo.branches[branch] = commit
        return commit


def _regular(content: bytes) -> StoredFile:
    return StoredFile(len(content), content=content)


class _ConnectionDropped(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LoopbackHub/1.0"

    def log_message(self, format, *args):  # the tests read `hub.requests` instead of stderr
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _read_body(self, drop_after: int | None = None) -> bytes:
        """The request body, plain or chunked; with `drop_after`, read that many bytes and drop the connection."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if drop_after is not None and sum(map(len, chunks)) >= drop_after:
                    raise _ConnectionDropped
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length", 0))
        if drop_after is not None:
            self.rfile.read(min(length, drop_after))
            raise _ConnectionDropped
        return self.rfile.read(length)

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        for key, value in {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None, content_type="application/json"):
        self._send(status, json.dumps(payload).encode(), headers, content_type)

    def _error(self, status: int, message: str, code: str | None = None):
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message} if code else None)

    def _user(self) -> str | None:
        authorization = self.headers.get("Authorization", "")
        return self.hub.user if authorization == f"Bearer {self.hub.token}" else None

    def _visible_repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and self._user() != repo.owner):
            self._error(404, f"Repository not found: {repo_id}", "RepoNotFound")
            return None
        return repo

    def _writable_repo(self, repo_id: str) -> Repo | None:
        if self._user() is None:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        repo = self._visible_repo(repo_id)
        if repo is not None and repo.owner != self._user():
            self._error(403, f"You do not have write access to {repo_id}")
            return None
        return repo

    def _snapshot(self, repo: Repo, revision: str) -> tuple[str, dict[str, StoredFile]] | None:
        revision = unquote(revision)
        commit = repo.branches.get(revision, revision if revision in repo.commits else None)
        if commit is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return None
        return commit, repo.commits[commit]

    def _route(self, method: str):
        path = urlsplit(self.path).path
        self.hub.requests.append(f"{method} {path}")
        routes = [
            ("GET", r"/api/whoami-v2", self.whoami),
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/refs", self.refs),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<branch>.+)", self.create_branch),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self.tree),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)", self.paths_info),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self.commit),
            ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", self.info),
            ("POST", r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("POST", r"/lfs/verify", self.lfs_verify),
            ("HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
            ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                try:
                    with self.hub.lock:
                        return handler(**{key: value for key, value in match.groupdict().items()})
                except _ConnectionDropped:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
        self._error(404, f"No such endpoint: {method} {path}")

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    # --- endpoints -----------------------------------------------------------------------------------------------

    def whoami(self):
        if self._user() is None:
            return self._error(401, "Invalid credentials in Authorization header")
        token = {"displayName": "loopback", "role": "write"}
        self._json(
            200,
            {"type": "user", "name": self._user(), "orgs": [], "auth": {"type": "access_token", "accessToken": token}},
        )

    def create_repo(self):
        body = json.loads(self._read_body() or b"{}")
        user = self._user()
        if user is None:
            return self._error(401, "Invalid credentials in Authorization header")
        if body.get("type", "model") not in (None, "model"):
            return self._error(400, "This server holds model repos only")
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        if repo_id in self.hub.repos:
            return self._json(409, {"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"})
        private = body.get("visibility") == "private" or bool(body.get("private"))  # 2.x clients send visibility
        self.hub.create_repo(repo_id, user, private)
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self):
        content = json.loads(self._read_body()).get("content", "")
        lines = content.splitlines()
        if lines and lines[0].strip() == "---" and "---" not in (line.strip() for line in lines[1:]):
            return self._json(400, {"errors": [{"message": "The metadata block (---) is not closed"}], "warnings": []})
        self._json(200, {"errors": [], "warnings": []})

    def info(self, repo, rev=None):
        repository = self._visible_repo(repo)
        if repository is None:
            return
        snapshot = self._snapshot(repository, rev or "main")
        if snapshot is None:
            return
        commit, files = snapshot
        siblings = [{"rfilename": path, "size": entry.size} for path, entry in sorted(files.items())]
        self._json(
            200,
            {
                "_id": repo,
                "id": repo,
                "modelId": repo,
                "author": repository.owner,
                "sha": commit,
                "private": repository.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "library_name": "transformers",
                "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z",
            },
        )

    def refs(self, repo):
        repository = self._visible_repo(repo)
        if repository is not None:
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit}
                for name, commit in repository.branches.items()
            ]
            self._json(200, {"branches": branches, "tags": [], "converts": []})

    def create_branch(self, repo, branch):
        body = json.loads(self._read_body() or b"{}")
        repository = self._writable_repo(repo)
        if repository is None:
            return
        branch = unquote(branch)
        if branch in repository.branches:
            return self._error(409, f"Reference already exists: refs/heads/{branch}")
        snapshot = self._snapshot(repository, body.get("startingPoint") or "main")
        if snapshot is not None:
            repository.branches[branch] = snapshot[0]
            self._json(200, {})

    def _entry(self, path: str, entry: StoredFile) -> dict:
        item = {"type": "file", "path": path, "size": entry.size, "oid": entry.etag}
        if entry.lfs_oid:
            item["lfs"] = {"oid": entry.lfs_oid, "size": entry.size, "pointerSize": 134}
        return item

    def tree(self, repo, rev, path=None):
        repository = self._visible_repo(repo)
        snapshot = repository and self._snapshot(repository, rev)
        if not snapshot:
            return
        prefix = f"{path.rstrip('/')}/" if path else ""
        entries = [self._entry(name, entry) for name, entry in sorted(snapshot[1].items()) if name.startswith(prefix)]
        if prefix and not entries:
            return self._error(404, f"Entry not found: {path}", "EntryNotFound")
        self._json(200, entries)

    def paths_info(self, repo, rev):
        body = self._read_body()
        repository = self._visible_repo(repo)
        snapshot = repository and self._snapshot(repository, rev)
        if not snapshot:
            return
        try:
            paths = json.loads(body)["paths"]
        except (ValueError, KeyError):  # form-encoded, as some client versions send it
            paths = [unquote(value) for key, value in re.findall(r"(paths)=([^&]*)", body.decode())]
        self._json(200, [self._entry(path, snapshot[1][path]) for path in paths if path in snapshot[1]])

    def preupload(self, repo, rev):
        body = json.loads(self._read_body())
        repository = self._writable_repo(repo)
        snapshot = repository and self._snapshot(repository, rev)
        if not snapshot:
            return
        files = []
        for file in body["files"]:
            lfs = file["path"].endswith(LFS_SUFFIXES) or file["size"] > LFS_SIZE
            existing = snapshot[1].get(file["path"])
            files.append(
                {
                    "path": file["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.etag if existing else None,
                }
            )
        self._json(200, {"files": files, "commitOid": snapshot[0]})

    def lfs_batch(self, repo):
        body = json.loads(self._read_body())
        repository = self._writable_repo(repo)
        if repository is None:
            return
        if body.get("operation") != "upload" or "basic" not in body.get("transfers", ["basic"]):
            return self._error(400, "Only uploads with the basic transfer are supported")
        objects = []
        for item in body["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.hub.lfs:
                answer["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs/{item['oid']}", "header": {}},
                    "verify": {"href": f"{self.hub.url}/lfs/verify", "header": {}},
                }
            objects.append(answer)
        self._json(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, oid):
        if self.hub.drops["lfs"]:
            self.hub.drops["lfs"] -= 1
            self._read_body(drop_after=1024)
        content = self._read_body()
        if hashlib.sha256(content).hexdigest() != oid:
            return self._error(400, f"Uploaded content does not match oid {oid}")
        self.hub.lfs[oid] = content
        self._send(200)

    def lfs_verify(self):
        body = json.loads(self._read_body())
        stored = self.hub.lfs.get(body["oid"])
        if stored is None or len(stored) != body["size"]:
            return self._error(404, f"Object {body['oid']} not found")
        self._json(200, {})

    def commit(self, repo, rev):
        if self.hub.drops["commit"]:
            self.hub.drops["commit"] -= 1
            self._read_body(drop_after=64)
        lines = [json.loads(line) for line in self._read_body().splitlines() if line.strip()]
        repository = self._writable_repo(repo)
        if repository is None:
            return
        branch = unquote(rev)
        if branch not in repository.branches:
            return self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        if header.get("parentCommit") and header["parentCommit"] != repository.branches[branch]:
            return self._error(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repository.commits[repository.branches[branch]])
        for line in lines:  # build the whole new snapshot first: a bad operation leaves the branch untouched
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = _regular(base64.b64decode(value["content"]))
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.hub.lfs:
                    return self._error(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = StoredFile(value["size"], lfs_oid=value["oid"])
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif line["key"] == "deletedFolder":
                files = {
                    path: entry for path, entry in files.items() if not path.startswith(value["path"].rstrip("/") + "/")
                }
            elif line["key"] != "header":
                return self._error(400, f"Unsupported commit operation {line['key']!r}")
        commit = self.hub._add_commit(repository, branch, files, header.get("summary", ""))
        self._json(
            200, {"commitUrl": f"{self.hub.url}/{repo}/commit/{commit}", "commitOid": commit, "pullRequestUrl": None}
        )

    def resolve(self, repo, rev, path):
        repository = self._visible_repo(repo)
        snapshot = repository and self._snapshot(repository, rev)
        if not snapshot:
            return
        commit, files = snapshot
        entry = files.get(unquote(path))
        if entry is None:
            return self._error(404, f"Entry not found: {path}", "EntryNotFound")
        content = self.hub.lfs[entry.lfs_oid] if entry.lfs_oid else entry.content
        headers = {"X-Repo-Commit": commit, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs_oid:
            headers.update({"X-Linked-Etag": f'"{entry.lfs_oid}"', "X-Linked-Size": str(entry.size)})
        status, requested = HTTPStatus.OK, re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if requested and self.command == "GET":
            start, end = int(requested[1]), int(requested[2]) if requested[2] else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], HTTPStatus.PARTIAL_CONTENT
        self._send(status, content, headers, content_type="application/octet-stream")
