"""The operator's admin console (staff only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from billing import staff
from billing.web.common import now, run, staff_required
from billing.web.templating import render


@staff_required
async def home(request: Request):
    query = request.query_params.get("q", "")[:100]
    data = await run(request, staff.overview, now(request), query)
    return render(request, "admin/home.html", data, fragment="admin/_companies.html")


routes = [
    Route("/admin/", home),
]
