"""PayTR's callback: POST /billing/callback, answered exactly `OK` once the outcome is committed.

The app sends it here before any middleware (sessions, CSRF, current user,
security headers, error pages): PayTR has no session and no CSRF token, it
proves itself with its hash, and it needs a bare `OK`, fast. That is why it
needs no CSRF exemption in practice (web/security.py still lists it).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from billing.ops import metrics
from billing.paytr import protocol
from billing.web.security import BodyTooLarge, Disconnected, read_body

log = logging.getLogger("billing.callback")

PATH = "/billing/callback"
MAX_BODY = 64 * 1024  # PayTR's callbacks are a few hundred bytes


async def _answer(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    state = scope["app"].state
    try:
        body = await read_body(receive, MAX_BODY)
    except Disconnected:
        return
    except BodyTooLarge:
        metrics.CALLBACKS.labels("too_large").inc()
        await _answer(send, 413, "request too large")
        return
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    settings = state.settings
    client = scope.get("client")
    remote = client[0] if client else ""
    try:
        callback = protocol.parse_callback(fields, str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt))
    except protocol.CallbackError as exc:
        metrics.CALLBACKS.labels("refused").inc()
        log.warning("refused a callback from %s: %s (merchant_oid=%r)", remote, exc, fields.get("merchant_oid", "")[:64])
        await _answer(send, 400, f"bad request: {exc}")
        return
    try:
        await state.callback_writer.apply(callback, remote)
    except Exception:  # not committed, or a bug: anything but OK makes PayTR try again
        log.exception("callback %s could not be applied", callback.merchant_oid)
        await _answer(send, 500, "error: try again")
        return
    await _answer(send, 200, "OK")


def dispatch(scope: Scope) -> bool:
    """Is this request PayTR's callback (to be answered by `endpoint`, ahead of everything)?"""
    return scope["type"] == "http" and scope["path"] == PATH


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] == "POST":
        await handle(scope, receive, send)
    else:
        await _answer(send, 405, "method not allowed: PayTR POSTs here")
