"""What the PayTR emulator serves to merchants' servers and customers' browsers.

Same paths, form fields, tokens and answers as PayTR: errors are HTTP 200 with a
status field, except pages a browser sees (404 unknown payment page, 422 invalid
card input, 400 invalid Direct API form).
"""

from __future__ import annotations

import asyncio
import functools
import time
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billing import money
from billing.i18n import gettext as _
from billing.paytr import protocol
from billing.paytr.emulator_model import (
    DECLINE_CARDS, DEFAULT_CURRENCY, DEFAULT_TIMEOUT_LIMIT, OUTCOMES, TEST_CARDS, Transaction, card_decline,
    missing, order_problem, parse_decimal_amount, php_amount, read_basket, read_card, split_expiry, token_ok,
    utcnow,
)
from billing.paytr.emulator_pages import message_page, render

PAYTR_TZ = ZoneInfo("Europe/Istanbul")  # PayTR writes its dates in Turkish time

GET_TOKEN_REQUIRED = ("merchant_id", "user_ip", "merchant_oid", "email", "payment_amount", "paytr_token",
                      "user_basket", "no_installment", "max_installment", "user_name", "user_address",
                      "user_phone", "merchant_ok_url", "merchant_fail_url")
DIRECT_REQUIRED = ("merchant_id", "user_ip", "merchant_oid", "email", "payment_amount", "payment_type",
                   "installment_count", "non_3d", "paytr_token", "user_name", "user_address", "user_phone",
                   "user_basket", "merchant_ok_url", "merchant_fail_url")
CARD_FIELDS = ("cc_owner", "card_number", "expiry_month", "expiry_year", "cvv")
STORED_CARD_FIELDS = ("utoken", "ctoken")


def _emulator(request: Request):
    return request.app.state.emulator


def _server_call(endpoint: str):
    """A call from the merchant's server (not a browser): counted in the emulator's `api_load`, and
    answered after the `api_latency` fault's seconds, as a slow PayTR would."""

    def decorate(handler):
        @functools.wraps(handler)
        async def answer(request: Request, *args) -> Response:
            emulator = _emulator(request)
            emulator.api_load.begin(endpoint, time.monotonic())
            try:
                if emulator.faults.api_latency:
                    await asyncio.sleep(emulator.faults.api_latency)
                return await handler(request, *args)
            finally:
                emulator.api_load.end()

        return answer

    return decorate


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


def _failed(reason: str) -> JSONResponse:
    return JSONResponse({"status": "failed", "reason": reason})


def _error(err_no: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "err_no": err_no, "err_msg": message})


def _missing_reason(names: list[str]) -> str:
    return "Zorunlu alan eksik: " + ", ".join(names)


def _bad_token_reason(order: tuple[str, ...]) -> str:
    # Naming the formula's fields is what saves a developer the most time.
    return f"paytr_token geçersiz ({' + '.join(order)} + merchant_salt)"


# --- iFrame API step 1 -------------------------------------------------------------------


@_server_call("get_token")
async def get_token(request: Request) -> Response:
    emulator = _emulator(request)
    form = await _form(request)
    faults = emulator.faults
    if faults.get_token == "refuse":
        return _failed(faults.refuse_reason)
    if faults.get_token == "timeout":
        await asyncio.sleep(faults.timeout_seconds)  # then answer: the order exists although the caller gave up
    problem = _get_token_problem(form, emulator)
    if problem:
        return _failed(problem)
    transaction = emulator.add(_new_transaction(form, "iframe", amount=int(form["payment_amount"]),
                                                timeout_limit=int(form.get("timeout_limit") or DEFAULT_TIMEOUT_LIMIT)))
    return JSONResponse({"status": "success", "token": transaction.token})


def _new_order_problem(form: dict, emulator, required: tuple[str, ...], token_fields: tuple[str, ...]) -> str | None:
    """What get-token and the Direct API check alike: fields, store, token, order, a fresh oid."""
    absent = missing(form, required)
    if absent:
        return _missing_reason(absent)
    if form["merchant_id"] != emulator.config.merchant_id:
        return "merchant_id geçersiz: mağaza bulunamadı"
    if not token_ok(form, token_fields, emulator.config):
        return _bad_token_reason(token_fields)
    problem = order_problem(form)
    if problem:
        return problem
    if emulator.transaction(form["merchant_oid"]):
        return f"merchant_oid daha önce kullanılmış: {form['merchant_oid']}"
    return None


def _get_token_problem(form: dict, emulator) -> str | None:
    problem = _new_order_problem(form, emulator, GET_TOKEN_REQUIRED, protocol.GET_TOKEN_FIELDS)
    if problem:
        return problem
    amount = form["payment_amount"]
    if not amount.isdigit():
        return "payment_amount 100 ile çarpılmış tam sayı olmalı (29.00 => 2900)"
    if int(amount) < 100:
        return "payment_amount en az 100 (1.00) olmalı"
    if form["no_installment"] not in ("0", "1"):
        return "no_installment 0 veya 1 olmalı"
    if not (form["max_installment"].isdigit() and int(form["max_installment"]) <= 12):
        return "max_installment 0 ile 12 arasında olmalı"
    timeout_limit = form.get("timeout_limit", "")
    if timeout_limit and not (timeout_limit.isdigit() and int(timeout_limit) >= 1):
        return "timeout_limit dakika cinsinden pozitif tam sayı olmalı"
    return None


def _new_transaction(form: dict, api: str, *, amount: int, timeout_limit: int = DEFAULT_TIMEOUT_LIMIT) -> Transaction:
    return Transaction(merchant_oid=form["merchant_oid"], api=api, amount=amount,
                       currency=form.get("currency") or DEFAULT_CURRENCY, test_mode=form.get("test_mode") or "0",
                       email=form["email"], basket=read_basket(form["user_basket"]),
                       ok_url=form["merchant_ok_url"], fail_url=form["merchant_fail_url"],
                       created=utcnow(), timeout_limit=timeout_limit,
                       customer={name: form.get(name, "") for name in ("user_name", "user_address", "user_phone")})


# --- the payment page inside the merchant's iframe ------------------------------------


async def payment_page(request: Request) -> Response:
    transaction = _payable(request)
    if not isinstance(transaction, Transaction):
        return transaction
    return _card_form(request, transaction)


async def pay(request: Request) -> Response:
    form = await _form(request)
    transaction = _payable(request)
    if not isinstance(transaction, Transaction):
        return transaction
    month, year = split_expiry(form.get("expiry", ""))
    card, errors = read_card(owner=form.get("cc_owner", ""), number=form.get("card_number", ""),
                             month=month, year=year, cvv=form.get("cvv", ""), now=utcnow())
    if errors:
        return _card_form(request, transaction, errors=errors, values=form, status=422)
    _emulator(request).decide(transaction, card, card_decline(card.number))
    return _redirect_page(request, transaction)


def _payable(request: Request) -> Transaction | Response:
    """The transaction behind the page's token, or the page a browser sees instead."""
    transaction = _emulator(request).by_token(request.path_params["token"])
    if transaction is None or (not transaction.decided and transaction.expired(utcnow())):
        return message_page(request, _("Payment page not found"),
                            _("This payment link is unknown or has expired. Go back to the shop and start "
                              "the payment again."), status=404)
    if transaction.decided:
        return message_page(request, _("Payment already processed"),
                            _("This payment was already processed. Go back to the shop to see its result."),
                            status=409)
    return transaction


def _card_form(request: Request, transaction: Transaction, *, errors: dict | None = None,
               values: dict | None = None, status: int = 200) -> Response:
    values = {name: value for name, value in (values or {}).items() if name != "cvv"}  # never echo a CVV
    return render(request, "payment.html", {
        "transaction": transaction, "errors": errors or {}, "values": values,
        "test_cards": TEST_CARDS,
        "decline_cards": [(number, OUTCOMES[outcome].message) for number, outcome in DECLINE_CARDS],
    }, status=status)


def _redirect_page(request: Request, transaction: Transaction) -> Response:
    """Send the customer's top window back to the shop, like PayTR does after a payment."""
    url = transaction.ok_url if transaction.status == "success" else transaction.fail_url
    return render(request, "redirect.html", {"transaction": transaction, "url": url})


# --- status query and refund ------------------------------------------------------------


@_server_call("status")
async def status_query(request: Request) -> Response:
    emulator = _emulator(request)
    form = await _form(request)
    problem = _server_call_problem(form, ("merchant_id", "merchant_oid", "paytr_token"),
                                   protocol.STATUS_FIELDS, emulator.config)
    if problem:
        return problem
    transaction = emulator.transaction(form["merchant_oid"])
    if transaction is None:
        return _error("004", "Sipariş bulunamadı")
    if transaction.status == "pending":
        return _error("005", "Ödeme henüz tamamlanmadı")
    if transaction.status == "failed":
        return JSONResponse({"status": "failed", "err_msg": transaction.decline.message})
    return JSONResponse(_status_answer(transaction))


def _status_answer(transaction: Transaction) -> dict:
    return {
        "status": "success",
        "payment_amount": php_amount(transaction.amount),
        "payment_total": php_amount(transaction.amount),  # no installment fees in the emulator
        "payment_date": _paytr_time(transaction.decided_at),
        "currency": transaction.currency,
        "taksit": "0",
        "kart_marka": transaction.card.brand_name,
        "masked_pan": transaction.card.masked,
        "test_mode": transaction.test_mode,
        "returns": [{"return_amount": php_amount(refund.amount), "return_date": _paytr_time(refund.at),
                     "return_type": refund.return_type, "reference_no": refund.reference_no}
                    for refund in transaction.refunds],
    }


def _paytr_time(moment) -> str:
    return moment.astimezone(PAYTR_TZ).strftime("%Y-%m-%d %H:%M:%S")


@_server_call("refund")
async def refund(request: Request) -> Response:
    emulator = _emulator(request)
    form = await _form(request)
    problem = _server_call_problem(form, ("merchant_id", "merchant_oid", "return_amount", "paytr_token"),
                                   protocol.REFUND_FIELDS, emulator.config)
    if problem:
        return problem
    if emulator.faults.refund == "refuse":
        return _error("009", emulator.faults.refuse_reason)
    amount = parse_decimal_amount(form["return_amount"])
    if not amount:
        return _error("006", "return_amount geçersiz: ayraç olarak nokta kullanın (örnek: 10.25)")
    reference_no = form.get("reference_no", "")
    if reference_no and not protocol.valid_merchant_oid(reference_no):  # same rule: alphanumeric, at most 64
        return _error("008", "reference_no en fazla 64 karakter, yalnızca harf ve rakam olmalı")
    transaction = emulator.transaction(form["merchant_oid"])
    if transaction is None:
        return _error("004", "Sipariş bulunamadı")
    if transaction.status != "success":
        return _error("005", "Sipariş için başarılı bir ödeme yok, iade yapılamaz")
    if amount > transaction.refundable:
        return _error("007", "İade tutarı iade edilebilir tutarı aşıyor "
                             f"(kalan: {money.decimal_string(transaction.refundable)})")
    emulator.refund(transaction, amount, reference_no)
    if emulator.faults.refund == "timeout":
        await asyncio.sleep(emulator.faults.timeout_seconds)  # the money went back; the caller never hears it
    return JSONResponse({"status": "success", "is_test": int(transaction.test_mode == "1"),
                         "merchant_oid": transaction.merchant_oid, "return_amount": form["return_amount"],
                         "reference_no": reference_no})


def _server_call_problem(form: dict, required: tuple[str, ...], order: tuple[str, ...], config) -> Response | None:
    absent = missing(form, required)
    if absent:
        return _error("001", _missing_reason(absent))
    if form["merchant_id"] != config.merchant_id:
        return _error("002", "merchant_id geçersiz: mağaza bulunamadı")
    if not token_ok(form, order, config):
        return _error("003", "paytr_token geçersiz")
    return None


# --- Direct API ------------------------------------------------------------------------


async def direct(request: Request) -> Response:
    """A browser posting card fields, or a merchant's server charging a stored card."""
    form = await _form(request)
    if not form.get("card_number") and (form.get("utoken") or form.get("ctoken")):
        return await _server_call("direct")(_stored_card_call)(request, form)
    return _pay_from_browser(request, form)


async def _stored_card_call(request: Request, form: dict) -> Response:
    return _charge_stored_card(request, form)


def _pay_from_browser(request: Request, form: dict) -> Response:
    emulator = _emulator(request)
    problem = _direct_problem(form, emulator, DIRECT_REQUIRED + CARD_FIELDS)
    utoken = form.get("utoken", "")
    if not problem and utoken and not emulator.knows_user(utoken):
        problem = "utoken geçersiz: kullanıcı bulunamadı"
    card, errors = read_card(owner=form.get("cc_owner", ""), number=form.get("card_number", ""),
                             month=form.get("expiry_month", ""), year=form.get("expiry_year", ""),
                             cvv=form.get("cvv", ""), now=utcnow())
    if not problem and errors:
        problem = "Kart bilgileri geçersiz: " + "; ".join(f"{name}: {text}" for name, text in errors.items())
    if problem:
        return message_page(request, _("Payment refused"), problem, status=400)
    transaction = emulator.add(_new_transaction(form, "direct", amount=parse_decimal_amount(form["payment_amount"])))
    emulator.decide(transaction, card, card_decline(card.number),
                    store_card=form.get("store_card") == "1", utoken=utoken)
    return _redirect_page(request, transaction)


def _charge_stored_card(request: Request, form: dict) -> Response:
    emulator = _emulator(request)
    problem = _direct_problem(form, emulator, DIRECT_REQUIRED + STORED_CARD_FIELDS)
    if problem:
        return _failed(problem)
    if form.get("recurring_payment") != "1" or form["non_3d"] != "1":
        return _failed("Kayıtlı karttan sunucu tarafı ödeme için recurring_payment=1 ve non_3d=1 gerekli")
    stored = emulator.stored_card(form["utoken"], form["ctoken"])
    if stored is None:
        return _failed("utoken veya ctoken geçersiz: kayıtlı kart bulunamadı")
    transaction = emulator.add(_new_transaction(form, "stored card",
                                                amount=parse_decimal_amount(form["payment_amount"])))
    emulator.decide(transaction, stored.card, OUTCOMES[emulator.card_outcome(stored.card)])
    return JSONResponse({"status": "success"})  # the outcome arrives by callback


def _direct_problem(form: dict, emulator, required: tuple[str, ...]) -> str | None:
    problem = _new_order_problem(form, emulator, required, protocol.DIRECT_FIELDS)
    if problem:
        return problem
    amount = parse_decimal_amount(form["payment_amount"])
    if amount is None:
        return "payment_amount nokta ile ayrılmış tutar olmalı (örnek: 29.00)"
    if amount < 100:
        return "payment_amount en az 1.00 olmalı"
    if form["payment_type"] != "card":
        return "payment_type card olmalı"
    if not form["installment_count"].isdigit():
        return "installment_count tam sayı olmalı"
    if form["non_3d"] not in ("0", "1"):
        return "non_3d 0 veya 1 olmalı"
    return None


# --- stored cards ----------------------------------------------------------------------


@_server_call("card_list")
async def card_list(request: Request) -> Response:
    emulator = _emulator(request)
    form = await _form(request)
    problem = _card_call_problem(form, ("merchant_id", "utoken", "paytr_token"), protocol.CARD_LIST_FIELDS,
                                 emulator.config)
    if problem:
        return problem
    return JSONResponse([stored.as_paytr() for stored in emulator.cards_of(form["utoken"])])


@_server_call("card_delete")
async def card_delete(request: Request) -> Response:
    emulator = _emulator(request)
    form = await _form(request)
    problem = _card_call_problem(form, ("merchant_id", "utoken", "ctoken", "paytr_token"),
                                 protocol.CARD_DELETE_FIELDS, emulator.config)
    if problem:
        return problem
    if not emulator.delete_card(form["utoken"], form["ctoken"]):
        return JSONResponse({"status": "error", "err_msg": "Kart yok veya daha önce silinmiş"})
    return JSONResponse({"status": "success"})


def _card_call_problem(form: dict, required: tuple[str, ...], order: tuple[str, ...], config) -> Response | None:
    absent = missing(form, required)
    if absent:
        return JSONResponse({"status": "error", "err_msg": _missing_reason(absent)})
    if form["merchant_id"] != config.merchant_id:
        return JSONResponse({"status": "error", "err_msg": "merchant_id geçersiz: mağaza bulunamadı"})
    if not token_ok(form, order, config):
        return JSONResponse({"status": "error", "err_msg": "paytr_token geçersiz"})
    return None


routes = [
    Route(protocol.API_PATHS["get_token"], get_token, methods=["POST"]),
    Route(protocol.API_PATHS["iframe"] + "{token}", payment_page, methods=["GET"]),
    Route(protocol.API_PATHS["iframe"] + "{token}", pay, methods=["POST"]),
    Route(protocol.API_PATHS["status"], status_query, methods=["POST"]),
    Route(protocol.API_PATHS["refund"], refund, methods=["POST"]),
    Route(protocol.API_PATHS["direct"], direct, methods=["POST"]),
    Route(protocol.API_PATHS["card_list"], card_list, methods=["POST"]),
    Route(protocol.API_PATHS["card_delete"], card_delete, methods=["POST"]),
]
