"""The language switch in every page's footer: a POST (with the CSRF token, like any form)
that works without JavaScript. It remembers the choice in a cookie, and for a logged-in user
on their account too, then goes back to the page it came from."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from billing import accounts, i18n
from billing.web.common import LANG_COOKIE, current_user, run, safe_next, settings

ONE_YEAR = 365 * 24 * 3600


async def switch(request: Request):
    form = await request.form()
    chosen = i18n.normalize(form.get("lang"))
    target = safe_next(form.get("next"), "/")
    if chosen is None:
        # Only en and tr exist; anything else changes nothing.
        return RedirectResponse(target, status_code=303)
    user = await current_user(request)
    if user is not None:
        await run(request, accounts.set_locale, user["id"], chosen)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(LANG_COOKIE, chosen, max_age=ONE_YEAR, httponly=True, samesite="lax",
                        secure=settings(request).https)
    return response


routes = [Route("/language", switch, methods=["POST"])]
