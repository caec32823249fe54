"""A local stand-in for the part of GitHub's REST API that the workflows call through `gh`.

scripts/ci_local.py runs it on a loopback port; the jobs reach it as `gh` does a GitHub
host named `github.localhost` (plain HTTP, `api.` prefix) through HTTP_PROXY. It keeps
issue comments, pull requests and commit statuses in memory, records every request in a
JSON-lines file (method, path, JSON body, answer status) so a test reads exactly what
would have been posted, and answers 404 to anything else. A pull request it opens gets
`refs/pull/N/head` in the local git server's repository, as GitHub's do. Only a request
with the run's token is served (401 otherwise), as GitHub refuses an unauthenticated write.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

BOT_LOGIN = "github-actions[bot]"
REPO = r"/repos/(?P<repo>[^/]+/[^/]+)"


class GitHubStandIn:
    def __init__(self, token: str, record: Path, git_server: Path):
        self.token, self.record, self.git_server = token, record, git_server
        self.comments: dict[int, dict] = {}
        self.pulls: dict[str, list[dict]] = {}
        self.statuses: list[dict] = []
        self.next_id = 1000
        self.lock = threading.Lock()
        self.routes = [
            ("GET", rf"{REPO}/issues/(?P<number>\d+)/comments", self.list_comments),
            ("POST", rf"{REPO}/issues/(?P<number>\d+)/comments", self.create_comment),
            ("PATCH", rf"{REPO}/issues/comments/(?P<comment>\d+)", self.edit_comment),
            ("POST", rf"{REPO}/pulls", self.create_pull),
            ("POST", rf"{REPO}/statuses/(?P<sha>[0-9a-f]{{40}})", self.create_status),
        ]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def proxy_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GitHubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                path = urlsplit(self.path).path
                status, payload = standin.serve(self.command, path, self.headers.get("Authorization", ""), body)
                with standin.lock, standin.record.open("a") as record:
                    record.write(
                        json.dumps({"method": self.command, "path": path, "body": body, "status": status}) + "\n"
                    )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = answer

            def log_message(self, *args) -> None:  # the record file is the log
                pass

        return Handler

    def serve(self, method: str, path: str, authorization: str, body) -> tuple[int, object]:
        if authorization != f"token {self.token}":
            return HTTPStatus.UNAUTHORIZED, {"message": "Requires authentication"}
        for route_method, pattern, serve in self.routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                with self.lock:
                    return serve(body, **match.groupdict())
        return HTTPStatus.NOT_FOUND, {"message": "Not Found (not served by the local stand-in)"}

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def list_comments(self, _body, repo: str, number: str):
        return HTTPStatus.OK, [
            comment for comment in self.comments.values() if comment["repo"] == repo and comment["issue"] == int(number)
        ]

    def create_comment(self, body, repo: str, number: str):
        comment = {
            "id": self.new_id(),
            "repo": repo,
            "issue": int(number),
            "body": body["body"],
            "user": {"login": BOT_LOGIN},
        }
        self.comments[comment["id"]] = comment
        return HTTPStatus.CREATED, comment

    def edit_comment(self, body, repo: str, comment: str):
        found = self.comments.get(int(comment))
        if not found or found["repo"] != repo:
            return HTTPStatus.NOT_FOUND, {"message": "Not Found"}
        found["body"] = body["body"]
        return HTTPStatus.OK, found

    def create_pull(self, body, repo: str):
        number = self.new_id()
        bare = self.git_server / f"{repo}.git"
        head = subprocess.run(
            ["git", "-C", str(bare), "rev-parse", f"refs/heads/{body['head']}"], capture_output=True, text=True
        )
        if head.returncode != 0:
            return HTTPStatus.UNPROCESSABLE_ENTITY, {"message": f"Validation Failed: no branch {body['head']}"}
        sha = head.stdout.strip()
        subprocess.run(["git", "-C", str(bare), "update-ref", f"refs/pull/{number}/head", sha], check=True)
        pull = {
            "number": number,
            "title": body["title"],
            "body": body.get("body", ""),
            "state": "open",
            "head": {"ref": body["head"], "sha": sha, "repo": {"full_name": repo}},
            "base": {"ref": body["base"], "repo": {"full_name": repo}},
            "user": {"login": BOT_LOGIN},
        }
        self.pulls.setdefault(repo, []).append(pull)
        return HTTPStatus.CREATED, pull

    def create_status(self, body, repo: str, sha: str):
        status = {"id": self.new_id(), "repo": repo, "sha": sha, **body}
        self.statuses.append(status)
        return HTTPStatus.CREATED, status


def read_record(record: Path) -> list[dict]:
    """The requests a stand-in recorded, in order."""
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
