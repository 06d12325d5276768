"""One frozen settings object, read from the environment and an optional `.env`.

Development works with no configuration at all: data in `data/`, a secret key
generated once and kept there, mail captured to `data/mail/`. Production refuses
to start while a secret is missing or a development default is still in use.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.config import Config
from starlette.datastructures import Secret


DEVELOPMENT = "development"
PRODUCTION = "production"
DEFAULT_MAIL_FROM = "PayTR Billing <billing@localhost>"
EMULATOR_API_BASE = "emulator"  # the built-in PayTR emulator, mounted in the app
PAYTR_API_BASE = "https://www.paytr.com"
DEMO_MERCHANT_ID, DEMO_MERCHANT_KEY, DEMO_MERCHANT_SALT = "100000", "EMULATORKEY0000", "EMULATORSALT000"


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line for the operator."""


@dataclass(frozen=True)
class Settings:
    env: str = DEVELOPMENT
    env_from_env: bool = False  # BILLING_ENV was set (environment or .env), not defaulted
    data_dir: Path = Path("data")
    base_url: str = "http://127.0.0.1:8000"
    base_url_from_env: bool = False
    secret_key: Secret = Secret("")
    app_name: str = "PayTR Billing"

    # Memory (docs/scaling.md "Memory"): worker threads for sync work (each holds at most one
    # database connection) and each connection's private page cache and shared file mapping.
    db_threads: int = 4
    db_cache_mb: int = 16
    db_mmap_mb: int = 0

    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: Secret = Secret("")
    smtp_tls: str = "starttls"
    # Can the mail path take an address whose part before the @ is not ASCII (ayşe@...)?
    # Only a server that offers SMTPUTF8 can; sign-up refuses such addresses when it is off.
    smtp_smtputf8: bool = True
    mail_from: str = DEFAULT_MAIL_FROM
    mail_max_attempts: int = 8
    # Sent emails (and delivered webhook payloads) keep their audit fields for ever; their rendered bodies and
    # context only this long (billing/mail.py prune_bodies): the outbox otherwise grows by every body ever sent.
    mail_body_retention_days: int = 90
    staff_alert_email: str = ""

    trial_days: int = 14  # what a new plan's form starts with; each plan keeps its own
    timezone: str = "Europe/Istanbul"

    # PayTR (the checkout issue): credentials, mode and where its API lives.
    paytr_merchant_id: str = ""
    paytr_merchant_key: Secret = Secret("")
    paytr_merchant_salt: Secret = Secret("")
    paytr_test_mode: bool = True
    paytr_api_base: str = EMULATOR_API_BASE
    paytr_notification_url: str = ""
    paytr_timeout: float = 10.0
    # The charge lane (billing/charge_lane.py): renewal charges sent at once, and per second.
    paytr_max_in_flight: int = 16
    paytr_max_per_second: float = 20.0
    allow_test_mode_in_production: bool = False
    trusted_proxies: tuple[str, ...] = ()

    # Invoices: who sells (VUK 230: legal name, address, tax office and number), and the VAT they charge.
    # Read from SELLER_LEGAL_NAME (or its older name SELLER_NAME) and SELLER_TAX_NUMBER (or SELLER_TAX_ID);
    # the attribute names stay those of the invoice columns they are copied into.
    seller_name: str = "PayTR Billing Demo Ltd. Şti."
    seller_address: str = "Büyükdere Cad. No:1, Şişli, İstanbul"
    seller_tax_id: str = ""
    seller_tax_office: str = ""
    seller_mersis: str = ""  # the 16-digit MERSİS number, printed when given
    seller_email: str = ""
    seller_website: str = ""
    seller_logo: Path | None = None  # an image printed at the top of PDFs
    vat_rate: Decimal = Decimal("20")

    # Lifecycle (the autopilot issue).
    scheduler: bool = True
    tick_seconds: int = 60
    renewal_notice_days: int = 7
    grace_days: int = 7
    price_change_notice_days: int = 30  # a catalog price reaches existing subscribers no sooner
    dunning_retry_days: tuple[int, ...] = (1, 3, 5)
    paytr_recurring: bool = False

    # The host product's integration (JSON API, portal links, webhooks).
    host_app_name: str = "your app"  # "← Back to {host_app_name}" on portal sessions
    portal_return_hosts: tuple[str, ...] = ()  # when set, a portal return_url's host must be one of these
    api_rate_per_second: int = 50  # per key, with a burst of api_rate_burst
    api_rate_burst: int = 100

    # The language of a visitor who has chosen none and whose browser sends no Accept-Language.
    default_locale: str = "en"

    # Observing it (billing/ops): who may scrape /metrics, how logs are written, when the outbox is stuck.
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    metrics_token: Secret = Secret("")
    log_format: str = "text"  # or "json": one object per line
    ready_outbox_minutes: int = 15  # /readyz fails while a due email or webhook has waited longer
    # Backups (billing/ops/backup.py): the tick makes one a day into backup_dir (None: off) and
    # keeps the newest backup_keep.
    backup_dir: Path | None = None
    backup_keep: int = 7

    @property
    def seller_legal_name(self) -> str:
        return self.seller_name

    @property
    def seller_tax_number(self) -> str:
        return self.seller_tax_id

    @property
    def is_production(self) -> bool:
        return self.env == PRODUCTION

    @property
    def uses_emulator(self) -> bool:
        return self.paytr_api_base == EMULATOR_API_BASE

    @property
    def database_path(self) -> Path:
        return self.data_dir / "billing.sqlite3"

    @property
    def mail_capture_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def url(self, path: str) -> str:
        """An absolute URL for emails and PayTR: BASE_URL + path."""
        return self.base_url.rstrip("/") + path

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        # Secrets are Starlette `Secret`s, whose repr is masked; keep it that way.
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"Settings({fields})"


def load(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env", *,
         production_checks: bool = True) -> Settings:
    """Read settings; in development also create the data dir and its secret key.
    `production_checks=False` is for `doctor`, which reports the production check itself."""
    environ = os.environ if environ is None else environ
    if env_file is not None and not Path(env_file).is_file():
        env_file = None
    config = Config(env_file, environ=environ)

    def get(key: str, default: str = "") -> str:
        return str(config(key, default=default)).strip()

    def number(key: str, default: int, minimum: int = 0) -> int:
        raw = get(key, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a whole number, not {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{key} must be at least {minimum}")
        return value

    def bounded(key: str, default: int, minimum: int, maximum: int, why: str) -> int:
        value = number(key, default, minimum)
        if value > maximum:
            raise ConfigError(f"{key} must be at most {maximum} ({why}), not {value}")
        return value

    def flag(key: str, default: bool) -> bool:
        raw = get(key, "1" if default else "0").lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be 1 or 0, not {raw!r}")

    env = get("BILLING_ENV", DEVELOPMENT).lower()
    if env not in (DEVELOPMENT, PRODUCTION):
        raise ConfigError(f"BILLING_ENV must be 'development' or 'production', not {env!r}")
    production = env == PRODUCTION

    data_dir = Path(get("BILLING_DATA_DIR", "data")).expanduser()
    base_url = get("BASE_URL")
    smtp_tls = get("SMTP_TLS", "starttls").lower()
    if smtp_tls not in ("starttls", "ssl", "none"):
        raise ConfigError(f"SMTP_TLS must be starttls, ssl or none, not {smtp_tls!r}")
    timezone = get("TIMEZONE", "Europe/Istanbul")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"TIMEZONE {timezone!r} is not a known IANA time zone") from None
    try:
        vat_rate = Decimal(get("VAT_RATE", "20"))
    except InvalidOperation:
        raise ConfigError("VAT_RATE must be a percentage such as 20 or 18.5") from None
    if not (0 <= vat_rate <= 100) or vat_rate.as_tuple().exponent < -2:
        raise ConfigError("VAT_RATE must be between 0 and 100 with at most two decimals")
    proxies = tuple(p.strip() for p in get("TRUSTED_PROXIES").split(",") if p.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"TRUSTED_PROXIES has {proxy!r}, which is not an IP address or network") from None
    retry_days = get("DUNNING_RETRY_DAYS", "1,3,5")
    try:
        dunning_retry_days = tuple(sorted(int(d) for d in retry_days.split(",") if d.strip()))
    except ValueError:
        raise ConfigError("DUNNING_RETRY_DAYS must be comma-separated day numbers, such as 1,3,5") from None

    seller = _seller(get, production)

    default_locale = get("DEFAULT_LOCALE", "en").lower()
    if default_locale not in ("en", "tr"):
        raise ConfigError(f"DEFAULT_LOCALE must be en or tr, not {default_locale!r}")

    metrics_allow = tuple(p.strip() for p in get("METRICS_ALLOW", "127.0.0.0/8,::1/128").split(",") if p.strip())
    for network in metrics_allow:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"METRICS_ALLOW has {network!r}, which is not an IP address or network") from None
    metrics_token = get("METRICS_TOKEN")
    if metrics_token and (len(metrics_token) < 24 or any(c.isspace() for c in metrics_token)):
        # It unlocks the metrics from anywhere: as hard to guess as an API key.
        raise ConfigError("METRICS_TOKEN must be at least 24 characters with no spaces "
                          "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    log_format = get("LOG_FORMAT", "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, not {log_format!r}")

    smtp_port_default = 465 if smtp_tls == "ssl" else 587
    settings = Settings(
        env=env,
        env_from_env=bool(get("BILLING_ENV")),
        data_dir=data_dir,
        base_url=(base_url or "http://127.0.0.1:8000").rstrip("/"),
        base_url_from_env=bool(base_url),
        secret_key=Secret(get("BILLING_SECRET_KEY")),
        app_name=get("APP_NAME", "PayTR Billing"),
        smtp_host=get("SMTP_HOST"),
        smtp_port=number("SMTP_PORT", smtp_port_default, minimum=1),
        smtp_username=get("SMTP_USERNAME"),
        smtp_password=Secret(get("SMTP_PASSWORD")),
        smtp_tls=smtp_tls,
        # On for the local capture; a real server must be known to offer it.
        smtp_smtputf8=flag("SMTP_SMTPUTF8", not get("SMTP_HOST")),
        mail_from=get("MAIL_FROM", DEFAULT_MAIL_FROM),
        mail_max_attempts=number("MAIL_MAX_ATTEMPTS", 8, minimum=1),
        mail_body_retention_days=number("MAIL_BODY_RETENTION_DAYS", 90, minimum=1),
        staff_alert_email=get("STAFF_ALERT_EMAIL"),
        trial_days=number("TRIAL_DAYS", 14, minimum=1),
        timezone=timezone,
        paytr_merchant_id=get("PAYTR_MERCHANT_ID"),
        paytr_merchant_key=Secret(get("PAYTR_MERCHANT_KEY")),
        paytr_merchant_salt=Secret(get("PAYTR_MERCHANT_SALT")),
        paytr_test_mode=flag("PAYTR_TEST_MODE", not production),
        paytr_api_base=get("PAYTR_API_BASE", PAYTR_API_BASE if production else EMULATOR_API_BASE).rstrip("/"),
        paytr_notification_url=get("PAYTR_NOTIFICATION_URL"),
        paytr_timeout=float(number("PAYTR_TIMEOUT", 10, minimum=1)),
        paytr_max_in_flight=number("PAYTR_MAX_IN_FLIGHT", 16, minimum=1),
        paytr_max_per_second=float(number("PAYTR_MAX_PER_SECOND", 20, minimum=1)),
        allow_test_mode_in_production=flag("ALLOW_TEST_MODE_IN_PRODUCTION", False),
        trusted_proxies=proxies,
        **seller,
        vat_rate=vat_rate,
        scheduler=flag("BILLING_SCHEDULER", True),
        tick_seconds=number("TICK_SECONDS", 60, minimum=1),
        db_threads=bounded("DB_THREADS", Settings.db_threads, 2, 64,
                           "each thread may hold a database connection and its page cache"),
        db_cache_mb=bounded("DB_CACHE_MB", Settings.db_cache_mb, 1, 1024, "it is per connection"),
        db_mmap_mb=bounded("DB_MMAP_MB", Settings.db_mmap_mb, 0, 65536, "0 turns the mapping off"),
        renewal_notice_days=number("RENEWAL_NOTICE_DAYS", 7, minimum=1),
        grace_days=number("GRACE_DAYS", 7, minimum=1),
        price_change_notice_days=number("PRICE_CHANGE_NOTICE_DAYS", 30, minimum=0),
        dunning_retry_days=dunning_retry_days,
        # The built-in emulator can store and charge cards, so development shows saved-card
        # renewal out of the box; against PayTR it needs the store's Non3D recurring permission.
        paytr_recurring=flag("PAYTR_RECURRING", not production and not get("PAYTR_API_BASE")),
        host_app_name=get("HOST_APP_NAME", Settings.host_app_name),
        portal_return_hosts=tuple(h.strip().lower() for h in get("PORTAL_RETURN_HOSTS").split(",") if h.strip()),
        api_rate_per_second=number("API_RATE_PER_SECOND", 50, minimum=1),
        api_rate_burst=number("API_RATE_BURST", 100, minimum=1),
        default_locale=default_locale,
        metrics_allow=metrics_allow,
        metrics_token=Secret(metrics_token),
        log_format=log_format,
        ready_outbox_minutes=number("READY_OUTBOX_MINUTES", 15, minimum=1),
        backup_dir=Path(get("BACKUP_DIR")).expanduser() if get("BACKUP_DIR") else None,
        backup_keep=number("BACKUP_KEEP", 7, minimum=1),
    )
    if production:
        if production_checks:
            check_production(settings)
    else:
        settings = _development_defaults(settings)
    return settings


LOGO_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")


def _seller(get, production: bool) -> dict:
    """The seller's details from the environment. Development falls back to a demo name and
    address; production has no defaults (check_production names what is missing)."""

    def aliased(key: str, old: str) -> str:
        new_value, old_value = get(key), get(old)
        if new_value and old_value and new_value != old_value:
            raise ConfigError(f"{key} and {old} (its older name) are both set and differ; keep only {key}")
        return new_value or old_value

    name = aliased("SELLER_LEGAL_NAME", "SELLER_NAME")
    address = get("SELLER_ADDRESS")
    if not production:
        name, address = name or Settings.seller_name, address or Settings.seller_address
    # Spaces group digits for people ("123 456 7890"); the invoice carries the digits alone.
    tax_number = aliased("SELLER_TAX_NUMBER", "SELLER_TAX_ID").replace(" ", "")
    if tax_number:
        problem = tax_number_problem(tax_number)
        if problem:
            raise ConfigError(f"SELLER_TAX_NUMBER {tax_number!r}: {problem}")
    mersis = get("SELLER_MERSIS").replace(" ", "")
    if mersis and not (mersis.isascii() and mersis.isdigit() and len(mersis) == 16):
        raise ConfigError(f"SELLER_MERSIS must be the 16-digit MERSİS number, not {mersis!r}")
    email = get("SELLER_EMAIL")
    if email and ("@" not in email or any(c.isspace() for c in email)):
        raise ConfigError(f"SELLER_EMAIL must be one email address, not {email!r}")
    logo = None
    if raw_logo := get("SELLER_LOGO"):
        logo = Path(raw_logo).expanduser().resolve()
        if not logo.is_file():
            raise ConfigError(f"SELLER_LOGO {raw_logo!r} is not a readable file")
        if logo.suffix.lower() not in LOGO_SUFFIXES:
            raise ConfigError(f"SELLER_LOGO must be an image ({', '.join(LOGO_SUFFIXES)}), not {logo.name!r}")
    return {"seller_name": name, "seller_address": address, "seller_tax_id": tax_number,
            "seller_tax_office": get("SELLER_TAX_OFFICE"), "seller_mersis": mersis, "seller_email": email,
            "seller_website": get("SELLER_WEBSITE"), "seller_logo": logo}


def tax_number_problem(tax_number: str) -> str | None:
    """Why a VKN (10 digits) or TC kimlik number (11) is not valid, by its check digits, as for buyers."""
    from stdnum.tr import tckimlik, vkn

    if not (tax_number.isascii() and tax_number.isdigit() and len(tax_number) in (10, 11)):
        return "a tax number is 10 digits (VKN), or 11 for a sole trader's TC kimlik number"
    valid = vkn.is_valid(tax_number) if len(tax_number) == 10 else tckimlik.is_valid(tax_number)
    return None if valid else "the check digits do not match; check the number"


def _development_defaults(settings: Settings) -> Settings:
    """Fill in what development may generate: a secret key and PayTR test credentials."""
    from billing.db import make_private  # imported here: settings loads before, and without, the database layer

    make_private(settings.data_dir)
    changes: dict = {}
    if not str(settings.secret_key):
        key_file = settings.data_dir / "secret_key"
        if not key_file.exists():
            # Written once, readable only by us; kept so sessions survive restarts.
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        changes["secret_key"] = Secret(key_file.read_text().strip())
    # The emulator (built in, or run alone) checks tokens exactly like PayTR, with these
    # demo credentials; development uses them unless real test credentials are given.
    if not settings.paytr_merchant_id:
        changes["paytr_merchant_id"] = DEMO_MERCHANT_ID
    if not str(settings.paytr_merchant_key):
        changes["paytr_merchant_key"] = Secret(DEMO_MERCHANT_KEY)
    if not str(settings.paytr_merchant_salt):
        changes["paytr_merchant_salt"] = Secret(DEMO_MERCHANT_SALT)
    return settings.replace(**changes) if changes else settings


SECRET_KEY_HINT = "use 32 random bytes or more: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
SECRET_KEY_MIN_LENGTH = 43  # 32 bytes in base64, the shortest common way to write them
SECRET_KEY_MIN_BITS = 160  # 32 random bytes in hex or base64 estimate 180 or more, every time


def estimated_bits(text: str) -> float:
    """Length × the Shannon entropy of the text's own character frequencies: a floor check that
    catches keys typed by hand ('s3cr3t-xxxx…', a word repeated), not a proof of randomness."""
    counts = Counter(text)
    return -sum(n * math.log2(n / len(text)) for n in counts.values())


def is_loopback_host(host: str) -> bool:
    """Only this machine can reach it: localhost or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_production(settings: Settings) -> None:
    """Raise ConfigError with a one-line reason for the first unsafe setting."""
    secret = str(settings.secret_key)
    if not secret:
        raise ConfigError(f"BILLING_SECRET_KEY is not set ({SECRET_KEY_HINT})")
    if len(set(secret)) == 1:
        raise ConfigError(f"BILLING_SECRET_KEY is one character repeated ({SECRET_KEY_HINT})")
    if len(secret) < SECRET_KEY_MIN_LENGTH:
        raise ConfigError(f"BILLING_SECRET_KEY is too short ({SECRET_KEY_HINT})")
    if estimated_bits(secret) < SECRET_KEY_MIN_BITS:
        raise ConfigError(f"BILLING_SECRET_KEY does not look random ({SECRET_KEY_HINT})")
    key_file = settings.data_dir / "secret_key"
    if key_file.is_file() and key_file.read_text().strip() == secret:
        raise ConfigError("BILLING_SECRET_KEY is the generated development key; set a new one")
    if not settings.base_url_from_env:
        raise ConfigError("BASE_URL is not set (the public https:// address of this app)")
    if not settings.https:
        raise ConfigError("BASE_URL must start with https:// in production")
    if not settings.smtp_host:
        raise ConfigError("SMTP_HOST is not set (production sends real mail, it does not capture it)")
    if settings.smtp_tls == "none" and not is_loopback_host(settings.smtp_host):
        raise ConfigError("SMTP_TLS=none would send the SMTP password and every email in clear text to "
                          f"{settings.smtp_host}; use starttls or ssl (none only for a server on localhost)")
    if settings.mail_from == DEFAULT_MAIL_FROM:
        raise ConfigError("MAIL_FROM is not set (the sender address customers see)")
    if not settings.paytr_merchant_id:
        raise ConfigError("PAYTR_MERCHANT_ID is not set")
    if not str(settings.paytr_merchant_key):
        raise ConfigError("PAYTR_MERCHANT_KEY is not set")
    if not str(settings.paytr_merchant_salt):
        raise ConfigError("PAYTR_MERCHANT_SALT is not set")
    if {str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt)} & {DEMO_MERCHANT_KEY, DEMO_MERCHANT_SALT}:
        raise ConfigError("PAYTR_MERCHANT_KEY or PAYTR_MERCHANT_SALT is the emulator's demo value; "
                          "use the ones in PayTR's merchant panel")
    if settings.uses_emulator:
        raise ConfigError("PAYTR_API_BASE points at the built-in emulator; production talks to PayTR")
    if not settings.paytr_api_base.startswith("https://"):
        raise ConfigError("PAYTR_API_BASE must start with https:// in production (it carries the merchant's tokens)")
    if settings.paytr_test_mode and not settings.allow_test_mode_in_production:
        raise ConfigError(
            "PAYTR_TEST_MODE=1 in production; set ALLOW_TEST_MODE_IN_PRODUCTION=1 if you really mean it"
        )
    # VUK 230: an invoice names the seller's legal name, address, tax office and tax number.
    if not settings.seller_name:
        raise ConfigError("SELLER_LEGAL_NAME is not set (the seller's legal name, printed on every invoice)")
    if not settings.seller_address:
        raise ConfigError("SELLER_ADDRESS is not set (the seller's address, printed on every invoice)")
    if not settings.seller_tax_office:
        raise ConfigError("SELLER_TAX_OFFICE is not set (the seller's tax office, printed on every invoice)")
    if not settings.seller_tax_id:
        raise ConfigError("SELLER_TAX_NUMBER is not set (the seller's VKN or TC kimlik number, printed on "
                          "every invoice)")
