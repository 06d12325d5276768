"""Logs an operator can ship and search: LOG_FORMAT=json writes one JSON object per line.

The standard library's logging with a small JSON formatter, not structlog: every library here
(uvicorn, APScheduler, httpx) already logs through `logging`, so a formatter on the root handlers
turns all of their lines into JSON too, with no second pipeline to bridge and no new dependency.
What structlog would add (bound context) is one contextvar here: the request's id, route and
company, set by billing.ops.observe and read by the formatter for every line of that request.

Whatever the format, what reaches a handler is masked on the way out: email addresses become
a***@example.com, anything shaped like a card number becomes [card], the links that carry a
reset, invite or secure-payment token lose the token, and the configured secrets (the app's
secret key, PayTR's key and salt, the SMTP password, the metrics token) become [secret]. The
masking runs in the handlers' filter, so code that logs cannot forget it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import time
from datetime import UTC, datetime

# The request being served: its id, route template and (once known) company.
REQUEST: contextvars.ContextVar[dict | None] = contextvars.ContextVar("billing_request", default=None)

REQUEST_ID_HEADER = "x-request-id"
# A caller's id is kept when it is short and harmless in a log line and a header; otherwise we make one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+/=-]{1,64}")

ACCESS = logging.getLogger("billing.access")


def request_id(offered: str | None) -> str:
    """The caller's X-Request-ID when it is safe to repeat, else a fresh random one."""
    if offered and _REQUEST_ID.fullmatch(offered):
        return offered
    # Only unique, never secret: Python's PRNG, not os.urandom (a system call on every request,
    # 4 % of a console page's CPU at 100k customers).
    return f"{_ids.getrandbits(64):016x}"


_ids = random.Random()


def bind(**values) -> None:
    """Add to what every log line of the current request carries (company_id, say)."""
    current = REQUEST.get()
    if current is not None:
        current.update(values)


# --- masking -------------------------------------------------------------------------------

_EMAIL = re.compile(r"([^\s@<>\"'(),;:=/]+)@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# 13 to 19 digits, optionally grouped by spaces or dashes: a card number's shape. Luhn decides.
_CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
_TOKEN_LINKS = re.compile(r"(/auth/(?:reset|invite)/|/odeme/guvenli/|/portal/)[^\s/?\"']+")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _mask_card(match: re.Match) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return "[card]" if _luhn(digits) else match.group(0)


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else address


class Masker:
    """Rewrites text so it carries no address, card number, token link or known secret."""

    def __init__(self, secrets_to_hide: tuple[str, ...] = ()):
        # Short values would mask ordinary words; every real secret here is long.
        self.secrets = tuple(sorted({s for s in secrets_to_hide if s and len(s) >= 8}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[secret]")
        if "@" in text:
            text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
        if "/" in text:
            text = _TOKEN_LINKS.sub(r"\1…", text)
        return _CARD.sub(_mask_card, text)


class MaskFilter(logging.Filter):
    """On a handler: the record's message (and traceback) leave masked, whatever the formatter."""

    def __init__(self, masker: Masker | None = None):
        super().__init__()
        self.masker = masker or Masker()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "billing_masked", False):  # several handlers may see one record
            return True
        if isinstance(record.args, tuple) and record.args:
            # Masked argument by argument, the tuple kept: uvicorn's access formatter reads the five
            # values of its line from record.args (client, method, path, version, status).
            record.args = tuple(self.masker(a) if isinstance(a, str) else a for a in record.args)
            if isinstance(record.msg, str):
                record.msg = self.masker(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: log what we have rather than nothing
                message = str(record.msg)
            record.msg, record.args = self.masker(message), ()
        if record.exc_info:
            record.exc_text = self.masker(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.masker(record.stack_info)
        record.billing_masked = True
        return True


# --- JSON ------------------------------------------------------------------------------------

# Fields a record may carry (logging's `extra=`) that belong in the JSON object.
EXTRA_FIELDS = ("method", "route", "status", "duration_ms", "company_id", "client")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = REQUEST.get()
        if context:
            line.update({k: v for k, v in context.items() if v is not None})
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def secrets_of(settings) -> tuple[str, ...]:
    """The configured secrets no log line may contain."""
    return tuple(str(v) for v in (settings.secret_key, settings.paytr_merchant_key, settings.paytr_merchant_salt,
                                  settings.smtp_password, settings.metrics_token))


def logging_config(settings, base: dict | None = None) -> dict:
    """A logging.config dict: uvicorn's (when given) with our formats, masking and loggers.

    json: every logger through one JSON handler; uvicorn's own access log is off, because our
    access line (logger billing.access) says the same with the route template instead of the raw
    URL, which can carry tokens. text: uvicorn's lines as before, masked, and no second access line.
    """
    json_format = settings.log_format == "json"
    masker = {"()": MaskFilter, "masker": Masker(secrets_of(settings))}
    config = {"version": 1, "disable_existing_loggers": False, **(base or {})}
    config["filters"] = {**config.get("filters", {}), "mask": masker}
    formatters = dict(config.get("formatters", {}))
    if json_format:
        formatters["json"] = {"()": JsonFormatter}
    else:
        formatters.setdefault("plain", {"format": "%(levelname)s %(name)s: %(message)s"})
    config["formatters"] = formatters
    handlers = {}
    for name, handler in config.get("handlers", {}).items():
        handler = {**handler, "filters": [*handler.get("filters", []), "mask"]}
        if json_format:
            handler["formatter"] = "json"
        handlers[name] = handler
    handlers.setdefault("default", {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                    "formatter": "json" if json_format else "plain", "filters": ["mask"]})
    config["handlers"] = handlers
    loggers = dict(config.get("loggers", {}))
    loggers["billing"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    # APScheduler would log every minute's tick; our tick logs when it did something.
    loggers["apscheduler"] = {"handlers": ["default"], "level": "WARNING", "propagate": False}
    loggers["billing.access"] = {"handlers": ["default"], "level": "INFO" if json_format else "WARNING",
                                 "propagate": False}
    if json_format:
        loggers["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}
        # uvicorn.error propagates to uvicorn, whose handler is "default" (now JSON): nothing to add.
    config["loggers"] = loggers
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    return config


def access(method: str, route: str, status: int, started: float, company_id=None) -> None:
    """One line per request (LOG_FORMAT=json): what was asked, how it ended, how long it took."""
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    ACCESS.info("%s %s %s", method, route, status,
                extra={"method": method, "route": route, "status": status, "duration_ms": duration_ms,
                       "company_id": company_id})
