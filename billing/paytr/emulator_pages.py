"""The PayTR emulator's pages for people, its fault knobs, and page rendering.

No CSRF here on purpose: the emulator plays another website and is never served in
production. Every link and form action starts with the mount prefix (`root`), so the
pages work both mounted under /paytr-emulator and standalone at the root.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import jinja2
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from billing import i18n
from billing.i18n import gettext as _
from billing.paytr.emulator_model import GET_TOKEN_FAULTS, OUTCOMES, REFUND_FAULTS, display_amount
from billing.web.templating import install_translations

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates" / "paytr_emulator"
# A transaction's status as PayTR's panel would show it, in the visitor's language.
STATUSES = {"pending": i18n.lazy_gettext("pending"), "success": i18n.lazy_gettext("success"),
            "failed": i18n.lazy_gettext("failed")}


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["amount"] = display_amount
    env.filters["when"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""
    # The visitor's language (chosen by the web app's middleware when mounted; English standalone).
    install_translations(env)
    env.globals["current_locale"] = i18n.current
    env.globals["statuses"] = STATUSES
    return Jinja2Templates(env=env, context_processors=[_root])


def _root(request: Request) -> dict:
    config = request.app.state.emulator.config
    return {"root": _prefix(request), "app_url": config.app_url, "app_name": config.app_name}


def _prefix(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def render(request: Request, name: str, context: dict, *, status: int = 200) -> Response:
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status)


def message_page(request: Request, title: str, text: str, *, status: int) -> Response:
    return render(request, "message.html", {"title": title, "text": text}, status=status)


def _emulator(request: Request):
    return request.app.state.emulator


# --- pages -----------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return _index(request)


def _index(request: Request, *, faults_error: str = "", cards_error: str = "", status: int = 200) -> Response:
    emulator = _emulator(request)
    cards = {utoken: [(stored, emulator.card_outcome(stored.card)) for stored in stored_cards]
             for utoken, stored_cards in emulator.stored_cards().items()}
    return render(request, "index.html", {
        "transactions": list(reversed(emulator.transactions())), "cards": cards, "outcomes": list(OUTCOMES),
        "faults": emulator.faults, "get_token_faults": GET_TOKEN_FAULTS, "refund_faults": REFUND_FAULTS,
        "faults_error": faults_error,
        "cards_error": cards_error,
    }, status=status)


async def transaction_detail(request: Request) -> Response:
    transaction = _emulator(request).transaction(request.path_params["merchant_oid"])
    if transaction is None:
        return message_page(request, _("No such transaction"),
                            _("The emulator has no transaction %(oid)s.", oid=request.path_params["merchant_oid"]),
                            status=404)
    return render(request, "transaction.html", {
        "transaction": transaction,
        "callback": transaction.callback_form(_emulator(request).config) if transaction.decided else None,
    })


async def send_callback_again(request: Request) -> Response:
    form = await request.form()
    transaction = _emulator(request).transaction(request.path_params["merchant_oid"])
    if transaction is None or not transaction.decided:
        return message_page(request, _("Nothing to send"),
                            _("Only a paid or failed transaction has a callback to send."), status=409)
    _emulator(request).resend(transaction)
    # Back to the page the button was on; only these two, so this is no open redirect.
    back = f"/transactions/{transaction.merchant_oid}" if form.get("back") == "detail" else "/"
    return RedirectResponse(_prefix(request) + back, status_code=303)


async def set_card_outcome(request: Request) -> Response:
    form = await request.form()
    try:
        _emulator(request).set_card_outcome(str(form.get("card", "")), str(form.get("outcome", "")))
    except ValueError as error:
        return _index(request, cards_error=str(error), status=400)
    return RedirectResponse(_prefix(request) + "/#cards", status_code=303)


async def faults_form(request: Request) -> Response:
    """The faults form on the index page; the API twin is /_faults."""
    form = await request.form()
    try:
        _emulator(request).set_faults(**{name: value for name, value in form.items() if isinstance(value, str)})
    except ValueError as error:
        return _index(request, faults_error=str(error), status=400)
    return RedirectResponse(_prefix(request) + "/#faults", status_code=303)


# --- the faults API, for the app's reliability tests ----------------------------------


async def faults_api(request: Request) -> Response:
    emulator = _emulator(request)
    if request.method == "POST":
        try:
            emulator.set_faults(**await _changes(request))
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
    return JSONResponse(asdict(emulator.faults))


async def _changes(request: Request) -> dict:
    """A JSON object or a form, as {name: value}; ValueError for anything else."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            changes = json.loads(await request.body())
        except ValueError:
            raise ValueError("the body is not valid JSON") from None
        if not isinstance(changes, dict):
            raise ValueError("send a JSON object of fault names and values")
        return changes
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


routes = [
    Route("/", index, methods=["GET"]),
    Route("/transactions/{merchant_oid}", transaction_detail, methods=["GET"]),
    Route("/transactions/{merchant_oid}/callback", send_callback_again, methods=["POST"]),
    Route("/cards/outcome", set_card_outcome, methods=["POST"]),
    Route("/faults", faults_form, methods=["POST"]),
    Route("/_faults", faults_api, methods=["GET", "POST"]),
]
