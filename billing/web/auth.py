"""Register, log in (with a second factor when it is on) and out, confirm it's you, reset a
forgotten password, accept an invitation (a team's or the staff's), enrol and manage TOTP,
undo an email change from the old address."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.routing import Route

from billing import accounts, clock, plans, roles, security_alerts, staff_accounts, subscriptions, two_factor
from billing.i18n import gettext as _, ngettext
from billing.db import write
from billing.accounts import Deactivated, FormError, InvalidToken, Throttle, TooManyAttempts
from billing.web.common import (DEVICE_COOKIE, locale, current_user, flash, form, fresh_auth_required, in_thread,
                                ip, login_redirect, must_enrol, now, redirect, run, safe_next, session_now,
                                settings, user_agent)
from billing.web.security import rotate_csrf_token
from billing.web.templating import render


async def _log_in(request: Request, user: dict) -> None:
    """A fresh session for every login: a new id, a new CSRF token, no portal return link.
    The browser is remembered for the account (a login from one it never saw is announced)."""
    request.session.pop("portal", None)
    request.session.pop(PENDING, None)
    old = request.session.pop("sid", None)
    if old:
        await run(request, accounts.end_session, old)
    token = await run(request, accounts.create_session, session_now(request), user["id"], ip(request),
                      user_agent(request))
    request.session["sid"] = token
    rotate_csrf_token(request)
    device = request.cookies.get(DEVICE_COOKIE, "")
    if not (20 <= len(device) <= 100 and device.replace("-", "").replace("_", "").isalnum()):
        device = security_alerts.new_device_token()
        request.scope["billing.device_cookie"] = device  # set on the response (web.common)
    await run(request, _note_browser, now(request), settings(request), user, device, ip(request), user_agent(request))


def _note_browser(db, now, settings, user, device, address, agent):
    with write(db):
        security_alerts.note_browser(db, now, settings, user, device, ip=address, user_agent=agent)


# The login in progress between the right password and the second factor: kept in the signed
# session cookie, for a few minutes, naming only the user; no session exists until the code.
PENDING = "two_factor_pending"
PENDING_TTL = timedelta(minutes=5)


def _pending_user_id(request: Request) -> int | None:
    pending = request.session.get(PENDING)
    if not isinstance(pending, dict):
        return None
    try:
        started = clock.parse(pending["at"])
    except (KeyError, TypeError, ValueError):
        return None
    if session_now(request) - started >= PENDING_TTL:
        request.session.pop(PENDING, None)
        return None
    return pending.get("uid")


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
    try:
        user = await run(request, accounts.finish_login, now(request), attempt, email, password)
    except Deactivated:
        context["message"] = _("This account has been deactivated. Ask an administrator if you need it again.")
        return render(request, "auth/login.html", context, status=403, fragment="auth/_login_form.html")
    if user is None:
        context["message"] = _("Email or password is incorrect.")
        return render(request, "auth/login.html", context, status=422, fragment="auth/_login_form.html")
    if two_factor.is_on(user):
        old = request.session.pop("sid", None)
        if old:  # whoever was logged in on this browser is logged out, as a completed login would do
            await run(request, accounts.end_session, old)
        request.session[PENDING] = {"uid": user["id"], "at": clock.iso(session_now(request)), "next": next_url}
        return redirect(request, "/auth/two-factor")
    await _log_in(request, user)
    return redirect(request, safe_next(next_url, _home(user)))


async def second_factor(request: Request):
    """Login, step two: the code from the authenticator app, or a recovery code."""
    user_id = _pending_user_id(request)
    user = await run(request, accounts.user_by_id, user_id) if user_id else None
    if user is None or user.get("deactivated_at") or not two_factor.is_on(user):
        flash(request, _("Your login took too long. Enter your email and password again."), "error")
        return redirect(request, "/auth/login")
    context = {"errors": {}, "message": None}
    if request.method != "POST":
        return render(request, "auth/two_factor.html", context)
    data = await form(request)
    code = (data.get("code") or "").strip()
    if not code or len(code) > 40:
        context["errors"] = {"code": _("Enter the 6-digit code from your authenticator app, or a recovery code.")}
        return render(request, "auth/two_factor.html", context, status=422, fragment="auth/_two_factor_form.html")
    checked = await _check_code(request, user, code, context, "auth/two_factor.html", "auth/_two_factor_form.html")
    if not isinstance(checked, str):
        return checked  # the page with what went wrong
    next_url = request.session.get(PENDING, {}).get("next", "")
    await _log_in(request, user)
    if checked == "recovery":
        left = await run(request, two_factor.remaining_codes, user["id"])
        flash(request, ngettext("You used a recovery code; %(num)d is left. Make new ones on your account page.",
                                "You used a recovery code; %(num)d are left. Make new ones on your account page.",
                                left), "warning" if left < 3 else "success")
    return redirect(request, safe_next(next_url, _home(user)))


async def _check_code(request: Request, user: dict, code: str, context: dict, template: str, fragment: str):
    """A second-factor code, throttled like a password (its own count: a right password does
    not clear wrong codes). 'totp' or 'recovery' when right; else the page to answer with."""
    attempt = await run(request, accounts.start_login, now(request), user["email"], ip(request), "two_factor")
    if attempt.locked:
        context["message"] = attempt.message
        return render(request, template, context, status=429, fragment=fragment, headers=retry_after(attempt))
    if attempt.delay:
        await asyncio.sleep(attempt.delay)
    kind = await run(request, two_factor.verify, session_now(request), settings(request), user, code,
                     ip=ip(request), user_agent=user_agent(request))
    if kind is None:
        context["errors"] = {"code": _("That code is not right, or was already used. Codes change every 30 seconds.")}
        return render(request, template, context, status=422, fragment=fragment)
    await run(request, accounts.attempt_succeeded, attempt)
    return kind


async def confirm(request: Request):
    """"Confirm it's you": the password again before a sensitive action (refunds, price changes,
    staff, API keys, webhook endpoints), then back where the person was going."""
    user = await current_user(request)
    if user is None:
        return login_redirect(request)
    next_url = safe_next(request.query_params.get("next") if request.method != "POST" else None, _home(user))
    context = {"values": {"next": next_url}, "errors": {}, "message": None, "two_factor_on": two_factor.is_on(user)}
    if request.method != "POST":
        return render(request, "auth/confirm.html", context)
    data = await form(request)
    next_url = safe_next(data.get("next"), _home(user))
    context["values"] = {"next": next_url}
    password = data.get("password", "")
    code = (data.get("code") or "").strip()
    if code and two_factor.is_on(user) and not password:
        # The authenticator instead of the password: proves the same (and more).
        checked = await _check_code(request, user, code[:40], context, "auth/confirm.html", "auth/_confirm_form.html")
        if not isinstance(checked, str):
            return checked
        await run(request, accounts.mark_authenticated, session_now(request), request.session["sid"])
        return redirect(request, next_url)
    if not password or len(password) > accounts.PASSWORD_MAX:
        context["errors"] = {"password": _("Enter your password, or a code from your authenticator app.")
                             if two_factor.is_on(user) else _("Enter your password.")}
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
        await run(request, accounts.reset_password, now(request), token, password_hash, settings(request),
                  ip(request), user_agent(request))
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


def _account_url(user: dict) -> str:
    return "/admin/account" if user["role"] == "staff" else "/billing/account"


@fresh_auth_required
async def two_factor_setup(request: Request):
    """Enrol: scan the QR code (or type the secret), then confirm with the first code. On
    success the ten recovery codes are shown, once, in this answer."""
    user = await current_user(request)
    context = {"errors": {}, "account_url": _account_url(user), "mandatory": must_enrol(request, user)}
    if two_factor.is_on(user):
        flash(request, _("Two-factor authentication is already on."))
        return redirect(request, _account_url(user))
    secret = await run(request, two_factor.pending_secret, settings(request), user)
    uri = two_factor.provisioning_uri(settings(request), user, secret)
    context.update(secret=two_factor.grouped(secret), qr=two_factor.qr_svg(uri, _("QR code for your authenticator app")))
    if request.method != "POST":
        return render(request, "auth/two_factor_setup.html", context)
    data = await form(request)
    code = (data.get("code") or "").strip()[:20]
    codes = None
    if two_factor.looks_like_totp(code):
        codes = await run(request, two_factor.confirm_enrolment, session_now(request), settings(request), user, code,
                          ip=ip(request), user_agent=user_agent(request))
    if codes is None:
        context["errors"] = {"code": _("That code is not right. Enter the 6-digit code your app shows now.")}
        return render(request, "auth/two_factor_setup.html", context, status=422)
    return _show_codes(request, user, codes, _("Two-factor authentication is on"))


def _show_codes(request: Request, user: dict, codes: list[str], title: str):
    text = "\n".join(codes) + "\n"
    return render(request, "auth/recovery_codes.html",
                  {"codes": codes, "title": title, "account_url": _account_url(user),
                   "download": "data:text/plain;charset=utf-8," + quote(
                       f"{settings(request).app_name}: {user['email']}\n\n{text}")},
                  headers={"Cache-Control": "no-store"})


@fresh_auth_required
async def regenerate_codes(request: Request):
    user = await current_user(request)
    if not two_factor.is_on(user):
        return redirect(request, _account_url(user))
    codes = await run(request, two_factor.regenerate_codes, now(request), user)
    return _show_codes(request, user, codes, _("New recovery codes"))


async def two_factor_disable(request: Request):
    """Turning two-factor off takes the password and a current code (or a recovery code)."""
    user = await current_user(request)
    if user is None:
        return login_redirect(request)
    context = {"errors": {}, "message": None, "account_url": _account_url(user)}
    if not two_factor.is_on(user):
        return redirect(request, _account_url(user))
    if user["role"] == "staff" and settings(request).is_production:
        context["message"] = _("Staff must keep two-factor authentication on. To move it to a new phone, "
                               "ask another administrator to reset it, then enrol again.")
        return render(request, "auth/two_factor_disable.html", context, status=403 if request.method == "POST" else 200)
    if request.method != "POST":
        return render(request, "auth/two_factor_disable.html", context)
    data = await form(request)
    password, code = data.get("password", ""), (data.get("code") or "").strip()
    errors = {}
    if not password or len(password) > accounts.PASSWORD_MAX:
        errors["password"] = _("Enter your password.")
    if not code or len(code) > 40:
        errors["code"] = _("Enter the 6-digit code from your authenticator app, or a recovery code.")
    if errors:
        context["errors"] = errors
        return render(request, "auth/two_factor_disable.html", context, status=422)
    attempt = await run(request, accounts.start_login, now(request), user["email"], ip(request))
    if attempt.locked:
        context["message"] = attempt.message
        return render(request, "auth/two_factor_disable.html", context, status=429, headers=retry_after(attempt))
    if attempt.delay:
        await asyncio.sleep(attempt.delay)
    if await run(request, accounts.finish_login, now(request), attempt, user["email"], password) is None:
        context["errors"] = {"password": _("That password is not right.")}
        return render(request, "auth/two_factor_disable.html", context, status=422)
    checked = await _check_code(request, user, code, context, "auth/two_factor_disable.html",
                                "auth/two_factor_disable.html")
    if not isinstance(checked, str):
        return checked
    await run(request, two_factor.disable, now(request), settings(request), user, ip=ip(request),
              user_agent=user_agent(request))
    flash(request, _("Two-factor authentication is off. Logging in now takes only your password."))
    return redirect(request, _account_url(user))


async def accept_staff_invite(request: Request):
    """An invited staff member sets their name and password; in production, enrolling TOTP
    comes next, before any page of the console (web.common's guard)."""
    token = request.path_params["token"]
    try:
        invite = await run(request, staff_accounts.invite_for_token, now(request), token)
    except InvalidToken as exc:
        return render(request, "auth/link_invalid.html", {"message": str(exc), "again_url": "/auth/login",
                                                          "again_label": _("Go to login")}, status=410)
    context = {"invite": invite, "errors": {}, "values": {}, "token": token, "role_labels": roles.LABELS}
    if request.method != "POST":
        return render(request, "auth/staff_invite.html", context)
    data = await form(request)
    context["values"] = data
    try:
        name, password = accounts.collect(
            lambda: accounts.check_text(data.get("name"), "name", "your name", accounts.NAME_MAX),
            lambda: accounts.check_password(data.get("password"), invite["email"]),
        )
        password_hash = await in_thread(accounts.hash_password, password)
        user = await run(request, staff_accounts.accept_invite, now(request), token, name, password_hash)
    except FormError as exc:
        context["errors"] = exc.errors
        return render(request, "auth/staff_invite.html", context, status=422)
    except InvalidToken as exc:
        return render(request, "auth/link_invalid.html", {"message": str(exc), "again_url": "/auth/login",
                                                          "again_label": _("Go to login")}, status=410)
    await _log_in(request, user)
    if settings(request).is_production:
        flash(request, _("Welcome! One more step: set up two-factor authentication."))
        return redirect(request, "/auth/two-factor/setup")
    flash(request, _("Welcome to the staff!"))
    return redirect(request, "/admin/")


async def undo_email_change(request: Request):
    """From the security alert sent to the old address: the address comes back, everyone is
    logged out, and the owner chooses a new password (whoever changed it knew the old one)."""
    token = request.path_params["token"]
    try:
        change = await run(request, accounts.email_change_for_token, now(request), token)
    except InvalidToken as exc:
        return render(request, "auth/link_invalid.html", {"message": str(exc), "again_url": "/auth/login",
                                                          "again_label": _("Go to login")}, status=410)
    context = {"change": change, "token": token, "errors": {}}
    if request.method != "POST":
        return render(request, "auth/undo_email.html", context)
    try:
        reset_token = await run(request, accounts.undo_email_change, now(request), token)
    except FormError as exc:
        context["errors"] = exc.errors
        return render(request, "auth/undo_email.html", context, status=409)
    except InvalidToken as exc:
        return render(request, "auth/link_invalid.html", {"message": str(exc), "again_url": "/auth/login",
                                                          "again_label": _("Go to login")}, status=410)
    request.session.clear()
    flash(request, _("Your email address is %(email)s again and everyone was logged out. "
                     "Now choose a new password.", email=change["old_email"]))
    return redirect(request, f"/auth/reset/{reset_token}")


routes = [
    Route("/auth/register", register, methods=["GET", "POST"]),
    Route("/auth/login", login, methods=["GET", "POST"]),
    Route("/auth/two-factor", second_factor, methods=["GET", "POST"]),
    Route("/auth/logout", logout, methods=["POST"]),
    Route("/auth/confirm", confirm, methods=["GET", "POST"]),
    Route("/auth/forgot-password", forgot_password, methods=["GET", "POST"]),
    Route("/auth/reset/{token}", reset_password, methods=["GET", "POST"]),
    Route("/auth/invite/{token}", accept_invite, methods=["GET", "POST"]),
    Route("/auth/staff-invite/{token}", accept_staff_invite, methods=["GET", "POST"]),
    Route("/auth/undo-email/{token}", undo_email_change, methods=["GET", "POST"]),
    Route("/auth/two-factor/setup", two_factor_setup, methods=["GET", "POST"]),
    Route("/auth/two-factor/recovery-codes", regenerate_codes, methods=["POST"]),
    Route("/auth/two-factor/disable", two_factor_disable, methods=["GET", "POST"]),
]
