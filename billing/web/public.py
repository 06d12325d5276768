"""Pages anyone can see: the landing page, pricing, and the health check."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from billing import plans, subscriptions
from billing.db import scalar
from billing.web.common import current_user, run, settings
from billing.web.templating import render


async def home(request: Request):
    return await pricing(request)


async def pricing(request: Request):
    user = await current_user(request)
    subscribe, current_plan = False, None
    if user and user["role"] == "owner":
        sub = await run(request, subscriptions.for_company, user["company_id"])
        subscribe, current_plan = not subscriptions.is_paid(sub), sub["plan"]
    offered = await run(request, plans.all_plans)
    # One trial length for every plan is said once; otherwise each card says its own.
    lengths = {p.trial_days for p in offered}
    return render(request, "pricing.html", {"plans": offered, "trial_days": lengths.pop() if len(lengths) == 1 else None,
                                            "subscribe": subscribe, "current_plan": current_plan})


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
