"""Calls to PayTR's API over httpx, always with a timeout.

Errors form a small tree, so callers can tell a refusal (PayTR answered and
said no: show its reason) from an outage (no answer in time: try again later).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import httpx

from billing.ops import metrics
from billing.paytr import protocol
from billing.settings import Settings

log = logging.getLogger("billing.paytr")


class PaytrError(Exception):
    """Anything that went wrong talking to PayTR."""


class PaytrRefused(PaytrError):
    """PayTR answered and refused; `reason` is its message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PaytrUnavailable(PaytrError):
    """No usable answer: timeout, connection error, server error or garbage."""


def _counted(call: str):
    """Count the call by outcome (ok, refused, unavailable) and time it, for /metrics."""

    def decorate(method):
        @functools.wraps(method)
        async def counted(*args, **kwargs):
            started, outcome = time.perf_counter(), "unavailable"
            try:
                result = await method(*args, **kwargs)
                outcome = "ok"
                return result
            except PaytrRefused:
                outcome = "refused"
                raise
            finally:
                metrics.PAYTR_CALLS.labels(call, outcome).inc()
                metrics.PAYTR_SECONDS.labels(call).observe(time.perf_counter() - started)

        return counted

    return decorate


class PaytrClient:
    def __init__(self, settings: Settings, http: httpx.AsyncClient):
        self.settings = settings
        self.http = http

    def _credentials(self) -> dict:
        s = self.settings
        return {"merchant_id": s.paytr_merchant_id, "key": str(s.paytr_merchant_key),
                "salt": str(s.paytr_merchant_salt)}

    async def _post(self, call: str, fields: dict) -> dict | list:
        path = protocol.API_PATHS[call]
        try:
            # httpx enforces its timeouts on sockets; this one also bounds in-process transports.
            async with asyncio.timeout(self.settings.paytr_timeout):
                response = await self.http.post(path, data=fields)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise PaytrUnavailable(f"PayTR did not answer in time ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise PaytrUnavailable(f"could not reach PayTR ({type(exc).__name__})") from exc
        if response.status_code >= 500:
            raise PaytrUnavailable(f"PayTR answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            log.warning("PayTR %s answered something that is not JSON: %r", call, response.text[:200])
            raise PaytrUnavailable("PayTR's answer could not be read") from None

    @_counted("get_token")
    async def get_token(self, request: dict) -> str:
        answer = await self._post("get_token", request)
        if isinstance(answer, dict) and answer.get("status") == "success" and answer.get("token"):
            return str(answer["token"])
        reason = answer.get("reason") if isinstance(answer, dict) else None
        raise PaytrRefused(str(reason or "PayTR refused to start the payment"))

    @_counted("status")
    async def status(self, merchant_oid: str) -> dict:
        fields = protocol.status_request(merchant_oid=merchant_oid, **self._credentials())
        answer = await self._post("status", fields)
        if not isinstance(answer, dict):
            raise PaytrUnavailable("unexpected status answer")
        return answer

    @_counted("refund")
    async def refund(self, merchant_oid: str, amount: int, reference_no: str) -> dict:
        fields = protocol.refund_request(merchant_oid=merchant_oid, amount=amount, reference_no=reference_no,
                                         **self._credentials())
        answer = await self._post("refund", fields)
        if isinstance(answer, dict) and answer.get("status") == "success":
            return answer
        raise PaytrRefused(str(answer.get("err_msg") if isinstance(answer, dict) else "refund refused"))

    @_counted("direct")
    async def charge_stored_card(self, request: dict) -> None:
        answer = await self._post("direct", request)
        if isinstance(answer, dict) and answer.get("status") == "success":
            return
        reason = (answer.get("reason") or answer.get("err_msg")) if isinstance(answer, dict) else None
        raise PaytrRefused(str(reason or "PayTR refused the charge"))

    @_counted("card_list")
    async def list_cards(self, utoken: str) -> list[dict]:
        s = self.settings
        fields = protocol.card_list_request(merchant_id=s.paytr_merchant_id, utoken=utoken,
                                            key=str(s.paytr_merchant_key), salt=str(s.paytr_merchant_salt))
        answer = await self._post("card_list", fields)
        if isinstance(answer, dict):
            if answer.get("status") == "error":
                raise PaytrRefused(str(answer.get("err_msg") or "card list refused"))
            return []
        return list(answer)

    @_counted("card_delete")
    async def delete_card(self, utoken: str, ctoken: str) -> None:
        s = self.settings
        fields = protocol.card_delete_request(merchant_id=s.paytr_merchant_id, utoken=utoken, ctoken=ctoken,
                                              key=str(s.paytr_merchant_key), salt=str(s.paytr_merchant_salt))
        answer = await self._post("card_delete", fields)
        if not (isinstance(answer, dict) and answer.get("status") == "success"):
            raise PaytrRefused(str(answer.get("err_msg") if isinstance(answer, dict) else "card delete refused"))


def timeouts(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.paytr_timeout, connect=min(5.0, settings.paytr_timeout))
