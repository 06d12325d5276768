"""The customer's side: the billing dashboard, the team page and the account page (name,
language, password, email address, two-factor authentication). The account forms are shared
with the staff's own account page (web.admin_staff), which passes its own page to answer with."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from billing import accounts, billing_details, dashboard, i18n, subscriptions, two_factor
from billing.accounts import FormError
from billing.i18n import gettext as _, ngettext
from billing.web.common import (LANG_COOKIE, current_user, flash, form, in_thread, ip, login_required, now,
                                owner_required, redirect, run, settings, user_agent)
from billing.web import wallet
from billing.web.templating import render


@login_required
async def billing_home(request: Request):
    user = await current_user(request)
    data = await run(request, dashboard.overview, now(request), user["company_id"])
    data["grace_ends"] = subscriptions.grace_ends(data["subscription"], settings(request).grace_days)
    data["recurring_enabled"] = settings(request).paytr_recurring
    data.update(await wallet.card_box(request, data["company"]))
    return render(request, "billing/dashboard.html", data)


async def _details_page(request: Request, values: dict | None = None, errors: dict | None = None,
                        status: int = 200):
    user = await current_user(request)
    company = await run(request, accounts.company, user["company_id"])
    return render(request, "billing/details.html",
                  {"company": company, "values": values if values is not None else billing_details.of(company),
                   "errors": errors or {}, "complete": billing_details.is_complete(company),
                   "can_edit": user["role"] == "owner"},
                  status=status, fragment="billing/_details_form.html")


@login_required
async def details(request: Request):
    return await _details_page(request)


@owner_required
async def save_details(request: Request):
    user = await current_user(request)
    data = await form(request)
    try:
        await run(request, billing_details.update, now(request), user, data)
    except FormError as exc:
        return await _details_page(request, values=data, errors=exc.errors, status=422)
    flash(request, _("Billing details saved. New invoices will be made out to them."))
    return redirect(request, "/billing/details")


async def _team_page(request: Request, errors: dict | None = None, values: dict | None = None, status: int = 200):
    user = await current_user(request)
    data = await run(request, accounts.team, now(request), user["company_id"])
    data.update(errors=errors or {}, values=values or {})
    return render(request, "billing/team.html", data, status=status, fragment="billing/_team.html")


@login_required
async def team(request: Request):
    return await _team_page(request)


@owner_required
async def invite(request: Request):
    user = await current_user(request)
    data = await form(request)
    try:
        email = accounts.check_email(data.get("email"), smtputf8=settings(request).smtp_smtputf8)
        await run(request, accounts.invite, now(request), settings(request), user, email, data.get("role", "member"),
                  ip(request))
    except FormError as exc:
        return await _team_page(request, errors=exc.errors, values=data, status=422)
    except accounts.TooManyAttempts as exc:
        return await _team_page(request, errors={"email": exc.message}, values=data, status=429)
    flash(request, ngettext("Invitation sent to %(email)s. The link works for %(num)d day.",
                            "Invitation sent to %(email)s. The link works for %(num)d days.",
                            accounts.INVITE_TTL.days, email=email))
    return redirect(request, "/billing/team")


@owner_required
async def withdraw_invite(request: Request):
    user = await current_user(request)
    await run(request, accounts.revoke_invite, now(request), user, request.path_params["invite_id"])
    flash(request, _("Invitation withdrawn."))
    return redirect(request, "/billing/team")


@owner_required
async def remove_member(request: Request):
    user = await current_user(request)
    try:
        await run(request, accounts.remove_member, now(request), user, request.path_params["user_id"])
    except LookupError:
        raise HTTPException(404) from None
    except FormError as exc:
        flash(request, exc.errors["member"], "error")
        return redirect(request, "/billing/team")
    flash(request, _("Colleague removed; their sessions have ended."))
    return redirect(request, "/billing/team")


ONE_YEAR = 365 * 24 * 3600


async def security_context(request: Request, user: dict) -> dict:
    """What the account pages show about signing in: two-factor and recovery codes left."""
    on = two_factor.is_on(user)
    return {"two_factor_on": on,
            "recovery_left": await run(request, two_factor.remaining_codes, user["id"]) if on else 0,
            "locale_choice": user.get("locale") or i18n.current()}


async def _account_page(request: Request, errors: dict | None = None, status: int = 200, values: dict | None = None):
    user = await current_user(request)
    company = await run(request, accounts.company, user["company_id"])
    context = {"company": company, "errors": errors or {}, "values": values or {}, "base": "/billing/account"}
    context.update(await security_context(request, user))
    return render(request, "billing/account.html", context, status=status)


@login_required
async def account_page(request: Request):
    return await _account_page(request)


async def change_name(request: Request, base: str, page):
    user = await current_user(request)
    data = await form(request)
    try:
        name = accounts.check_text(data.get("name"), "name", "your name", accounts.NAME_MAX)
        await run(request, accounts.set_name, now(request), user, name)
    except FormError as exc:
        return await page(request, errors=exc.errors, status=422, values=data)
    flash(request, _("Name saved."))
    return redirect(request, base)


async def change_password(request: Request, base: str, page):
    """The current password, then the new one twice. Other sessions end; the account is told."""
    user = await current_user(request)
    data = await form(request)
    try:
        current = data.get("current_password", "")
        if not current or len(current) > accounts.PASSWORD_MAX or not await in_thread(
                accounts.password_matches, user["password_hash"], current):
            raise FormError({"current_password": _("That password is not right.")})
        password = accounts.check_password(data.get("new_password"), user["email"], field="new_password")
        if data.get("new_password") != data.get("new_password_confirm"):
            raise FormError({"new_password_confirm": _("The two passwords do not match.")})
        password_hash = await in_thread(accounts.hash_password, password)
        await run(request, accounts.change_password, now(request), settings(request), user,
                  request.session.get("sid"), password_hash, ip=ip(request), user_agent=user_agent(request))
    except FormError as exc:
        return await page(request, errors=exc.errors, status=422)
    flash(request, _("Password changed. You were logged out on every other device."))
    return redirect(request, base)


async def change_email(request: Request, base: str, page):
    """A new address, confirmed with the password. The old address is told, with a link to undo."""
    user = await current_user(request)
    data = await form(request)
    try:
        email = accounts.check_email(data.get("new_email"), "new_email", smtputf8=settings(request).smtp_smtputf8)
        current = data.get("email_password", "")
        if not current or len(current) > accounts.PASSWORD_MAX or not await in_thread(
                accounts.password_matches, user["password_hash"], current):
            raise FormError({"email_password": _("That password is not right.")})
        try:
            await run(request, accounts.change_email, now(request), settings(request), user, email, ip=ip(request),
                      user_agent=user_agent(request))
        except FormError as exc:
            raise FormError({"new_email": exc.errors["email"]}) from None
    except FormError as exc:
        return await page(request, errors=exc.errors, status=422, values={"new_email": data.get("new_email", "")})
    flash(request, ngettext("Your email address is now %(email)s. We told your old address, with a link to undo "
                            "the change for %(num)d day.",
                            "Your email address is now %(email)s. We told your old address, with a link to undo "
                            "the change for %(num)d days.", accounts.EMAIL_UNDO_TTL.days, email=email))
    return redirect(request, base)


@login_required
async def save_name(request: Request):
    return await change_name(request, "/billing/account", _account_page)


@login_required
async def save_password(request: Request):
    return await change_password(request, "/billing/account", _account_page)


@login_required
async def save_email(request: Request):
    return await change_email(request, "/billing/account", _account_page)


@login_required
async def save_language(request: Request):
    return await change_language(request, "/billing/account", _account_page)


async def change_language(request: Request, base: str, page):
    """The user's language: their pages, and every email to them from now on."""
    user = await current_user(request)
    data = await form(request)
    try:
        await run(request, accounts.set_locale, user["id"], data.get("locale", ""))
    except FormError as exc:
        return await page(request, errors=exc.errors, status=422)
    chosen = i18n.normalize(data.get("locale"))
    with i18n.using(chosen):  # said in the language just chosen
        flash(request, _("Language saved. Pages and emails will be in English from now on.") if chosen == "en"
              else _("Language saved. Pages and emails will be in Turkish from now on."))
    response = redirect(request, base)
    # After logging out, this browser keeps the choice too.
    response.set_cookie(LANG_COOKIE, chosen, max_age=ONE_YEAR, httponly=True, samesite="lax",
                        secure=settings(request).https)
    return response


routes = [
    Route("/billing/account", account_page),
    Route("/billing/account/language", save_language, methods=["POST"]),
    Route("/billing/account/name", save_name, methods=["POST"]),
    Route("/billing/account/password", save_password, methods=["POST"]),
    Route("/billing/account/email", save_email, methods=["POST"]),
    Route("/billing/", billing_home),
    Route("/billing/details", details),
    Route("/billing/details", save_details, methods=["POST"]),
    Route("/billing/team", team),
    Route("/billing/team/invite", invite, methods=["POST"]),
    Route("/billing/team/invites/{invite_id:int}/withdraw", withdraw_invite, methods=["POST"]),
    Route("/billing/team/members/{user_id:int}/remove", remove_member, methods=["POST"]),
]
