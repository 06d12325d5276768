"""Pages anyone can see: the landing page, pricing, and the health check."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from billing import offers
from billing.db import scalar
from billing.web.common import current_user, run, settings
from billing.web.templating import render


async def home(request: Request):
    """The landing page: what is sold, the plans, and the usual questions."""
    return await _plans_page(request, "landing.html")


async def pricing(request: Request):
    """The plans on their own (the nav's "Pricing"), with the same questions below."""
    return await _plans_page(request, "pricing.html")


async def _plans_page(request: Request, template: str):
    user = await current_user(request)
    page = await run(request, offers.view, user)
    s = settings(request)
    return render(request, template, {"page": page, "vat_rate": format(s.vat_rate.normalize(), "f"),
                                      "saves_cards": s.paytr_recurring, "renewal_notice_days": s.renewal_notice_days})


async def healthz(request: Request):
    try:
        await run(request, lambda db: scalar(db, "SELECT count(*) FROM _sqlite_migrations"))
    except Exception as exc:  # any database trouble means unhealthy, whatever its type
        return JSONResponse({"status": "error", "database": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


routes = [
    Route("/", home),
    Route("/pricing", pricing),
    Route("/healthz", healthz),
]
