"""Register, log in and out, reset a forgotten password, accept an invitation."""

from __future__ import annotations

import asyncio

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.routing import Route

from billing import accounts, plans, subscriptions
from billing.i18n import gettext as _, ngettext
from billing.accounts import FormError, InvalidToken, Throttle, TooManyAttempts
from billing.web.common import (locale, current_user, flash, form, in_thread, ip, login_redirect, now, redirect, run, safe_next, session_now,
                                settings, user_agent)
from billing.web.security import rotate_csrf_token
from billing.web.templating import render


async def _log_in(request: Request, user: dict) -> None:
    """A fresh session for every login: a new id, a new CSRF token, no portal return link."""
    request.session.pop("portal", None)
    old = request.session.pop("sid", None)
    if old:
        await run(request, accounts.end_session, old)
    token = await run(request, accounts.create_session, session_now(request), user["id"], ip(request),
                      user_agent(request))
    request.session["sid"] = token
    rotate_csrf_token(request)


def retry_after(throttle: Throttle) -> dict:
    return {"Retry-After": str(int(throttle.locked_for.total_seconds()) + 1)}


def _home(user: dict) -> str:
    return "/admin/" if user["role"] == "staff" else "/billing/"


def _default_plan(db):
    return plans.get(db, plans.default_code(db))


async def register(request: Request):
    chosen = await run(request, plans.subscribable, request.query_params.get("plan", ""))
    context = {"values": {"plan": chosen.code if chosen else ""}, "errors": {},
               "trial_days": (chosen or await run(request, _default_plan)).trial_days, "plan": chosen}
    # Starlette routes HEAD to GET endpoints: anything but POST shows the page and reads no form.
    if request.method != "POST":
        user = await current_user(request)
        if user:
            return redirect(request, _home(user))
        return render(request, "auth/register.html", context)

    data = await form(request)
    context["values"] = data
    context["plan"] = await run(request, plans.subscribable, data.get("plan", ""))
    try:
        company_name, name, email, password = accounts.collect(
            lambda: accounts.check_text(data.get("company_name"), "company_name", "your company's name",
                                        accounts.COMPANY_MAX),
            lambda: accounts.check_text(data.get("name"), "name", "your name", accounts.NAME_MAX),
            lambda: accounts.check_email(data.get("email"), smtputf8=settings(request).smtp_smtputf8),
            lambda: accounts.check_password(data.get("password"), data.get("email", "")),
        )
        password_hash = await in_thread(accounts.hash_password, password)
        user = await run(request, accounts.register, now(request), settings(request), company_name=company_name,
                         name=name, email=email, password_hash=password_hash,
                         plan=data.get("plan") or None, ip=ip(request), locale=locale(request))
    except FormError as exc:
        context["errors"] = exc.errors
        return render(request, "auth/register.html", context, status=422, fragment="auth/_register_form.html")
    except TooManyAttempts as exc:
        context["errors"] = {"email": exc.message}
        return render(request, "auth/register.html", context, status=429, fragment="auth/_register_form.html",
                      headers=retry_after(exc.throttle))
    await _log_in(request, user)
    trial = await run(request, subscriptions.for_company, user["company_id"])
    flash(request, ngettext("Welcome aboard! Your %(num)d-day free trial has started.",
                            "Welcome aboard! Your %(num)d-day free trial has started.",
                            subscriptions.trial_length_days(trial)))
    return redirect(request, "/billing/")


async def login(request: Request):
    next_url = safe_next(request.query_params.get("next"), "")
    context = {"values": {"next": next_url}, "errors": {}, "message": None}
    if request.method != "POST":
        user = await current_user(request)
        if user:
            return redirect(request, safe_next(next_url, _home(user)))
        return render(request, "auth/login.html", context)

    data = await form(request)
    email = accounts.normalize_email(data.get("email", ""))
    password = data.get("password", "")
    next_url = safe_next(data.get("next"), "")
    context["values"] = {"email": email, "next": next_url}

    if not email or not password:
        context["errors"] = {k: v for k, v in (("email", _("Enter your email address.") if not email else None),
                                               ("password", _("Enter your password.") if not password else None)) if v}
        return render(request, "auth/login.html", context, status=422, fragment="auth/_login_form.html")
    if len(password) > accounts.PASSWORD_MAX or len(email) > accounts.EMAIL_MAX:
        context["message"] = _("Email or password is incorrect.")
        return render(request, "auth/login.html", context, status=422, fragment="auth/_login_form.html")

    # Counted before the password is checked, in the same transaction as the decision.
    attempt = await run(request, accounts.start_login, now(request), email, ip(request))
    if attempt.locked:
        context["message"] = attempt.message
        return render(request, "auth/login.html", context, status=429, fragment="auth/_login_form.html",
                      headers=retry_after(attempt))
    if attempt.delay:
        await asyncio.sleep(attempt.delay)  # slows guessing without tying up a worker thread
    user = await run(request, accounts.finish_login, now(request), attempt, email, password)
    if user is None:
        context["message"] = _("Email or password is incorrect.")
        return render(request, "auth/login.html", context, status=422, fragment="auth/_login_form.html")
    await _log_in(request, user)
    return redirect(request, safe_next(next_url, _home(user)))


async def confirm(request: Request):
    """"Confirm it's you": the password again before a sensitive action (refunds, price changes,
    staff, API keys, webhook endpoints), then back where the person was going."""
    user = await current_user(request)
    if user is None:
        return login_redirect(request)
    next_url = safe_next(request.query_params.get("next") if request.method != "POST" else None, _home(user))
    context = {"values": {"next": next_url}, "errors": {}, "message": None}
    if request.method != "POST":
        return render(request, "auth/confirm.html", context)
    data = await form(request)
    next_url = safe_next(data.get("next"), _home(user))
    context["values"] = {"next": next_url}
    password = data.get("password", "")
    if not password or len(password) > accounts.PASSWORD_MAX:
        context["errors"] = {"password": _("Enter your password.")}
        return render(request, "auth/confirm.html", context, status=422, fragment="auth/_confirm_form.html")
    # Throttled like a login: the confirm form must not become a way to guess the password.
    attempt = await run(request, accounts.start_login, now(request), user["email"], ip(request))
    if attempt.locked:
        context["message"] = attempt.message
        return render(request, "auth/confirm.html", context, status=429, fragment="auth/_confirm_form.html",
                      headers=retry_after(attempt))
    if attempt.delay:
        await asyncio.sleep(attempt.delay)
    if await run(request, accounts.finish_login, now(request), attempt, user["email"], password) is None:
        context["errors"] = {"password": _("That password is not right.")}
        return render(request, "auth/confirm.html", context, status=422, fragment="auth/_confirm_form.html")
    await run(request, accounts.mark_authenticated, session_now(request), request.session["sid"])
    return redirect(request, next_url)


async def logout(request: Request):
    token = request.session.get("sid")
    await run(request, accounts.end_session, token)
    request.session.clear()
    flash(request, _("You have been logged out."))
    return redirect(request, "/auth/login")


async def forgot_password(request: Request):
    context = {"values": {}, "errors": {}, "sent_to": None}
    if request.method != "POST":
        return render(request, "auth/forgot_password.html", context)
    data = await form(request)
    context["values"] = data
    try:
        email = accounts.check_email(data.get("email"), smtputf8=settings(request).smtp_smtputf8)
    except FormError as exc:
        context["errors"] = exc.errors
        return render(request, "auth/forgot_password.html", context, status=422,
                      fragment="auth/_forgot_password_form.html")
    context["sent_to"] = email
    context["minutes"] = int(accounts.RESET_TTL.total_seconds() // 60)
    response = render(request, "auth/forgot_password.html", context, fragment="auth/_forgot_password_form.html")
    # The work (a link and its email for a known address, a little less for an unknown one) runs
    # after the answer is sent, so how long the answer takes cannot tell who has an account.
    response.background = BackgroundTask(run, request, accounts.request_password_reset, now(request),
                                         settings(request), email, ip(request))
    return response


async def reset_password(request: Request):
    token = request.path_params["token"]
    context = {"errors": {}, "token": token}
    try:
        user = await run(request, accounts.reset_token_user, now(request), token)
    except InvalidToken as exc:
        return render(request, "auth/link_invalid.html", {"message": str(exc), "again_url": "/auth/forgot-password",
                                                          "again_label": _("Send a new link")}, status=410)
    context["email"] = user["email"]
    if request.method != "POST":
        return render(request, "auth/reset_password.html", context)
    data = await form(request)
    try:
        password = accounts.check_password(data.get("password"), user["email"])
        if data.get("password") != data.get("password_confirm"):
            raise FormError({"password_confirm": _("The two passwords do not match.")})
        password_hash = await in_thread(accounts.hash_password, password)
        await run(request, accounts.reset_password, now(request), token, password_hash)
    except FormError as exc:
        context["errors"] = exc.errors
        return render(request, "auth/reset_password.html", context, status=422,
                      fragment="auth/_reset_password_form.html")
    except InvalidToken as exc:  # used in another tab a moment ago
        return render(request, "auth/link_invalid.html", {"message": str(exc), "again_url": "/auth/forgot-password",
                                                          "again_label": _("Send a new link")}, status=410)
    request.session.clear()
    flash(request, _("Your password has been changed and you were logged out everywhere. "
                     "Log in with your new password."))
    return redirect(request, "/auth/login")


async def accept_invite(request: Request):
    token = request.path_params["token"]
    try:
        invite = await run(request, accounts.invite_for_token, now(request), token)
    except InvalidToken as exc:
        return render(request, "auth/link_invalid.html", {"message": str(exc), "again_url": "/auth/login",
                                                          "again_label": _("Go to login")}, status=410)
    context = {"invite": invite, "errors": {}, "values": {}, "token": token}
    if request.method != "POST":
        return render(request, "auth/accept_invite.html", context)
    data = await form(request)
    context["values"] = data
    try:
        name, password = accounts.collect(
            lambda: accounts.check_text(data.get("name"), "name", "your name", accounts.NAME_MAX),
            lambda: accounts.check_password(data.get("password"), invite["email"]),
        )
        password_hash = await in_thread(accounts.hash_password, password)
        user = await run(request, accounts.accept_invite, now(request), token, name, password_hash)
    except FormError as exc:
        context["errors"] = exc.errors
        return render(request, "auth/accept_invite.html", context, status=422, fragment="auth/_accept_invite_form.html")
    except InvalidToken as exc:
        return render(request, "auth/link_invalid.html", {"message": str(exc), "again_url": "/auth/login",
                                                          "again_label": _("Go to login")}, status=410)
    await _log_in(request, user)
    flash(request, _("Welcome to %(company)s!", company=invite["company_name"]))
    return redirect(request, "/billing/")


routes = [
    Route("/auth/register", register, methods=["GET", "POST"]),
    Route("/auth/login", login, methods=["GET", "POST"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/auth/confirm", confirm, methods=["GET", "POST"]),
    Route("/auth/forgot-password", forgot_password, methods=["GET", "POST"]),
    Route("/auth/reset/{token}", reset_password, methods=["GET", "POST"]),
    Route("/auth/invite/{token}", accept_invite, methods=["GET", "POST"]),
]
