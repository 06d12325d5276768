"""Development-only pages: the captured mail. Not mounted in production."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from billing import mail
from billing.i18n import gettext as _
from billing.web.common import in_thread, settings
from billing.web.templating import render


def _with_time(message: dict) -> dict:
    """The Date header as an instant, so the page shows it in the reader's language and time zone."""
    try:
        when = parsedate_to_datetime(message.get("date") or "")
    except (TypeError, ValueError):
        when = None
    return {**message, "when": when if when is not None and when.tzinfo is not None else None}


async def mailbox(request: Request):
    messages = await in_thread(mail.captured, settings(request).mail_capture_dir)
    return render(request, "dev/mail.html", {"messages": [_with_time(m) for m in messages]})


async def _find(request: Request) -> dict:
    messages = await in_thread(mail.captured, settings(request).mail_capture_dir)
    found = next((m for m in messages if m["id"] == request.path_params["message_id"]), None)
    if found is None:
        raise HTTPException(404, _("No captured email with that number."))
    return found


async def message(request: Request):
    return render(request, "dev/message.html", {"message": _with_time(await _find(request))})


_HEAD = re.compile(r"<head(\s[^>]*)?>", re.IGNORECASE)


def _links_open_in_a_new_tab(html: str) -> str:
    # Followed inside the frame, a link loads a page that refuses to be framed ("refused to
    # connect"); a <base target> sends every link of the email to a new tab instead.
    base = '<base target="_blank">'
    head = _HEAD.search(html)
    if head is None:
        return base + html
    return html[:head.end()] + base + html[head.end():]


async def message_html(request: Request):
    found = await _find(request)
    # The email's own HTML, shown in a sandboxed frame: no scripts; the sandbox lets its links
    # open a new tab, outside the sandbox, so the page they open works as usual.
    return HTMLResponse(_links_open_in_a_new_tab(found["html"]), headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                   "frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"})


routes = [
    Route("/dev/mail", mailbox),
    Route("/dev/mail/{message_id:str}", message),
    Route("/dev/mail/{message_id:str}/html", message_html),
]
