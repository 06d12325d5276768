"""The operator's admin console (staff only)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from billing import accounts, clock, dashboard, events, jobs, staff, subscriptions
from billing.db import write
from billing.web.common import current_user, flash, form, now, redirect, run, settings, staff_required
from billing.web.templating import render


@staff_required
async def home(request: Request):
    query = request.query_params.get("q", "")[:100]
    data = await run(request, staff.overview, now(request), query)
    return render(request, "admin/home.html", data, fragment="admin/_companies.html")


async def _company_page(request: Request, error: str | None = None, status: int = 200):
    company_id = request.path_params["company_id"]
    data = await run(request, staff.company, company_id)
    if data is None:
        raise HTTPException(404, "No customer with that number.")
    data["entries"] = await run(request, dashboard.timeline, company_id, settings(request))
    data["status_label"] = subscriptions.STATUS_LABELS[data["subscription"]["status"]]
    data["error"] = error
    return render(request, "admin/company.html", data, status=status)


@staff_required
async def company(request: Request):
    return await _company_page(request)


@staff_required
async def extend_trial(request: Request):
    data = await form(request)
    try:
        days = int(data.get("days", ""))
        if not 1 <= days <= 90:
            raise ValueError
    except ValueError:
        return await _company_page(request, "Enter a number of days from 1 to 90.", status=422)
    user = await current_user(request)

    def extend(db, at):
        with write(db):
            sub = subscriptions.for_company(db, request.path_params["company_id"])
            if sub is None:
                raise LookupError
            return subscriptions.extend_trial(db, at, sub, days, events.user_actor(user))

    try:
        sub = await run(request, extend, now(request))
    except LookupError:
        raise HTTPException(404, "No customer with that number.") from None
    except subscriptions.TransitionError as exc:
        return await _company_page(request, str(exc), status=409)
    flash(request, f"Trial extended by {days} days, to {sub['trial_ends_at'][:10]}. New reminders will go out.")
    return redirect(request, f"/admin/companies/{request.path_params['company_id']}")


@staff_required
async def test_clock(request: Request):
    if settings(request).is_production:
        raise HTTPException(404)
    app_clock = request.app.state.clock
    context = {"error": None, "report": None}
    if request.method == "POST":
        data = await form(request)
        offset = app_clock.offset()
        try:
            if data.get("action") == "reset":
                offset = type(offset)(0)
            else:
                offset = offset + clock.parse_duration(data.get("advance", ""))
            await run(request, clock.save_offset, offset)
        except ValueError as exc:
            context["error"] = str(exc)
        else:
            app_clock.forget()
            # Everyone else's sessions age with the clock; the staff member moving it stays in.
            await run(request, accounts.carry_session, app_clock.now(), request.session.get("sid"))
            # Jobs run as of the new time at once, so the effect shows right away.
            context["report"] = await jobs.tick(request.app.state.jobs)
    context.update(app_now=app_clock.now(), real_now=clock.utcnow(),
                   ahead=_ahead(app_clock.offset()))
    return render(request, "admin/clock.html", context, status=422 if context["error"] else 200)


def _ahead(offset) -> str:
    if not offset:
        return ""
    hours = offset.seconds // 3600
    return f"{offset.days} days {hours} h" if hours else f"{offset.days} days"


routes = [
    Route("/admin/", home),
    Route("/admin/companies/{company_id:int}", company),
    Route("/admin/companies/{company_id:int}/extend-trial", extend_trial, methods=["POST"]),
    Route("/admin/clock", test_clock, methods=["GET", "POST"]),
]
