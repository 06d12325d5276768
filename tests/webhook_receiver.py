"""A host's webhook endpoint on a real port: it verifies every request with the
`standardwebhooks` package, as the README tells hosts to, and keeps what it received.

`status` is what it answers; `hold` (a threading.Event) makes it wait before answering
until the event is set, like a host that has hung."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from conftest import free_port


class Receiver:
    def __init__(self, port: int | None = None, secrets: list[str] | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/billing"
        self.secrets = list(secrets or [])
        self.status = 200
        self.hold: threading.Event | None = None
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def verified_with(self, body: bytes, headers: dict) -> list[str]:
        good = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            good.append(secret)
        return good

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                with receiver.lock:
                    status = receiver.status
                    receiver.requests.append({"headers": headers, "body": body, "status": status,
                                              "verified_with": receiver.verified_with(body, headers)})
                answer = json.dumps({"received": headers.get("webhook-id")}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def events(self) -> list[dict]:
        """The bodies it accepted (answered 2xx), each signed with a secret it knows."""
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests
                    if r["verified_with"] and 200 <= r["status"] < 300]

    def types(self) -> list[str]:
        return [e["type"] for e in sorted(self.events(), key=lambda e: e["sequence"])]
