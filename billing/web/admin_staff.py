"""The operator's staff (/admin/staff: admins invite, change roles, deactivate) and a staff
member's own account (/admin/account: name, language, password, email, two-factor)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from billing import accounts, audit, roles, staff_accounts
from billing.accounts import FormError
from billing.i18n import gettext as _, ngettext
from billing.web import account
from billing.web.common import (current_user, flash, form, fresh_auth_required, ip, now, redirect, requires, run,
                                settings, staff_required)
from billing.web.templating import render


async def _staff_page(request: Request, errors: dict | None = None, values: dict | None = None, status: int = 200,
                      form_name: str | None = None):
    """The list; `form_name` names the form the errors belong to ('invite' or 'withdraw')."""
    members = await run(request, staff_accounts.staff_list)
    for member in members:
        member["last_login"] = staff_accounts.last_login(member)
    invites = await run(request, staff_accounts.pending_invites, now(request))
    return render(request, "admin/staff.html",
                  {"members": members, "invites": invites, "errors": errors or {}, "values": values or {},
                   "form": form_name, "role_labels": roles.LABELS, "role_descriptions": roles.DESCRIPTIONS,
                   "roles": roles.ROLES},
                  status=status)


async def _member_page(request: Request, user_id: int, errors: dict | None = None, values: dict | None = None,
                       status: int = 200, form_name: str | None = None):
    member = next((m for m in await run(request, staff_accounts.staff_list) if m["id"] == user_id), None)
    if member is None:
        raise HTTPException(404)
    member["last_login"] = staff_accounts.last_login(member)
    return render(request, "admin/staff_member.html",
                  {"member": member, "role": member["staff_role"] or roles.ADMIN, "errors": errors or {},
                   "values": values or {}, "form": form_name, "role_labels": roles.LABELS,
                   "role_descriptions": roles.DESCRIPTIONS, "roles": roles.ROLES},
                  status=status)


@requires("staff.manage")
async def member_page(request: Request):
    return await _member_page(request, request.path_params["user_id"])


@requires("staff.manage")
async def staff_page(request: Request):
    return await _staff_page(request)


@requires("staff.manage")
@fresh_auth_required
async def invite(request: Request):
    admin = await current_user(request)
    data = await form(request)
    try:
        email, role, reason = accounts.collect(
            lambda: accounts.check_email(data.get("email"), smtputf8=settings(request).smtp_smtputf8),
            lambda: staff_accounts.check_role(data.get("role", "")),
            lambda: audit.check_reason(data.get("reason")),
        )
        await run(request, staff_accounts.invite, now(request), settings(request), admin, email, role, reason,
                  ip(request))
    except FormError as exc:
        return await _staff_page(request, errors=exc.errors, values=data, status=422, form_name="invite")
    flash(request, ngettext("Invitation sent to %(email)s. The link works for %(num)d day.",
                            "Invitation sent to %(email)s. The link works for %(num)d days.",
                            staff_accounts.INVITE_TTL.days, email=email))
    return redirect(request, "/admin/staff")


async def _member_action(request: Request, form_name: str, action, done):
    admin = await current_user(request)
    user_id = request.path_params["user_id"]
    data = await form(request)
    try:
        member = await run(request, action, admin, user_id, data)
    except LookupError:
        raise HTTPException(404) from None
    except FormError as exc:
        return await _member_page(request, user_id, errors=exc.errors, values=data, status=422, form_name=form_name)
    flash(request, done(member["name"]))
    return redirect(request, f"/admin/staff/{user_id}")


@requires("staff.manage")
@fresh_auth_required
async def change_role(request: Request):
    def action(db, admin, user_id, data):
        return staff_accounts.change_role(db, now(request), admin, user_id, data.get("role", ""), data.get("reason"),
                                          ip(request))
    return await _member_action(request, "role", action, lambda name: _("Role changed for %(name)s.", name=name))


@requires("staff.manage")
@fresh_auth_required
async def deactivate(request: Request):
    def action(db, admin, user_id, data):
        return staff_accounts.deactivate(db, now(request), admin, user_id, data.get("reason"), ip(request))
    return await _member_action(request, "deactivate", action, lambda name: _("%(name)s is deactivated and was logged out everywhere.", name=name))


@requires("staff.manage")
@fresh_auth_required
async def reactivate(request: Request):
    def action(db, admin, user_id, data):
        return staff_accounts.reactivate(db, now(request), admin, user_id, data.get("reason"), ip(request))
    return await _member_action(request, "reactivate", action, lambda name: _("%(name)s can log in again.", name=name))


@requires("staff.manage")
@fresh_auth_required
async def reset_two_factor(request: Request):
    def action(db, admin, user_id, data):
        return staff_accounts.reset_two_factor(db, now(request), settings(request), admin, user_id,
                                               data.get("reason"), ip(request))
    return await _member_action(request, "2fa", action, lambda name: _("Two-factor authentication was reset for %(name)s.", name=name))


@requires("staff.manage")
@fresh_auth_required
async def withdraw_invite(request: Request):
    admin = await current_user(request)
    data = await form(request)
    try:
        await run(request, staff_accounts.withdraw_invite, now(request), admin, request.path_params["invite_id"],
                  data.get("reason"), ip(request))
    except LookupError:
        raise HTTPException(404) from None
    except FormError as exc:
        return await _staff_page(request, errors=exc.errors, values=data, status=422, form_name="withdraw")
    flash(request, _("Invitation withdrawn."))
    return redirect(request, "/admin/staff")


# --- a staff member's own account --------------------------------------------------------------


async def _my_account(request: Request, errors: dict | None = None, status: int = 200, values: dict | None = None):
    user = await current_user(request)
    context = {"errors": errors or {}, "values": values or {}, "base": "/admin/account",
               "role_label": roles.LABELS[roles.role_of(user)], "role_description": roles.DESCRIPTIONS[roles.role_of(user)]}
    context.update(await account.security_context(request, user))
    return render(request, "admin/account.html", context, status=status)


@staff_required
async def my_account(request: Request):
    return await _my_account(request)


@staff_required
async def save_name(request: Request):
    return await account.change_name(request, "/admin/account", _my_account)


@staff_required
async def save_language(request: Request):
    return await account.change_language(request, "/admin/account", _my_account)


@staff_required
async def save_password(request: Request):
    return await account.change_password(request, "/admin/account", _my_account)


@staff_required
async def save_email(request: Request):
    return await account.change_email(request, "/admin/account", _my_account)


routes = [
    Route("/admin/staff", staff_page),
    Route("/admin/staff/invite", invite, methods=["POST"]),
    Route("/admin/staff/{user_id:int}", member_page),
    Route("/admin/staff/invites/{invite_id:int}/withdraw", withdraw_invite, methods=["POST"]),
    Route("/admin/staff/{user_id:int}/role", change_role, methods=["POST"]),
    Route("/admin/staff/{user_id:int}/deactivate", deactivate, methods=["POST"]),
    Route("/admin/staff/{user_id:int}/reactivate", reactivate, methods=["POST"]),
    Route("/admin/staff/{user_id:int}/two-factor-reset", reset_two_factor, methods=["POST"]),
    Route("/admin/account", my_account),
    Route("/admin/account/name", save_name, methods=["POST"]),
    Route("/admin/account/language", save_language, methods=["POST"]),
    Route("/admin/account/password", save_password, methods=["POST"]),
    Route("/admin/account/email", save_email, methods=["POST"]),
]
