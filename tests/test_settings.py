import subprocess
import sys
from pathlib import Path

import pytest

from billing import settings as settings_module
from billing.settings import ConfigError

ROOT = Path(__file__).resolve().parent.parent
GOOD_SECRET = "sRxiXwW-oebIqt68mJP82SomzFOwf-Y_9ZG1AiTlaaCGXNSZmHIPkt4XwE-50GXk"  # secrets.token_urlsafe(48)

PRODUCTION = {
    "BILLING_ENV": "production",
    "BILLING_SECRET_KEY": GOOD_SECRET,
    "BASE_URL": "https://billing.example.com",
    "SMTP_HOST": "smtp.example.com",
    "SMTP_PASSWORD": "smtp-password-value",
    "MAIL_FROM": "Billing <billing@example.com>",
    "PAYTR_MERCHANT_ID": "123456",
    "PAYTR_MERCHANT_KEY": "merchant-key-value",
    "PAYTR_MERCHANT_SALT": "merchant-salt-value",
    "PAYTR_TEST_MODE": "0",
    "SELLER_LEGAL_NAME": "Örnek Yazılım Ltd. Şti.",
    "SELLER_ADDRESS": "Büyükdere Cad. No:1, Şişli, İstanbul",
    "SELLER_TAX_OFFICE": "Zincirlikuyu",
    "SELLER_TAX_NUMBER": "4540536920",
}


def load(tmp_path, **env):
    return settings_module.load({"BILLING_DATA_DIR": str(tmp_path / "data"), **env}, env_file=None)


def test_development_needs_no_configuration(tmp_path):
    s = load(tmp_path)
    assert s.env == "development"
    assert s.trial_days == 14
    assert s.timezone == "Europe/Istanbul"
    assert s.base_url == "http://127.0.0.1:8000"
    assert s.smtp_host == ""  # mail is captured to the data dir
    assert s.mail_capture_dir == tmp_path / "data" / "mail"
    assert s.uses_emulator


def test_development_secret_is_generated_once_and_kept(tmp_path):
    first = load(tmp_path)
    second = load(tmp_path)
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.exists()
    assert len(str(first.secret_key)) >= 32
    assert str(first.secret_key) == str(second.secret_key) == key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o077 == 0  # readable only by the owner


def test_env_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("TRIAL_DAYS=30\nTIMEZONE='Europe/Berlin'\n# comment\nAPP_NAME=Faturam\n")
    s = settings_module.load({"BILLING_DATA_DIR": str(tmp_path / "d"), "APP_NAME": "Billing Co"}, env_file=env_file)
    assert s.trial_days == 30
    assert s.timezone == "Europe/Berlin"
    assert s.app_name == "Billing Co"


@pytest.mark.parametrize("env, message", [
    ({"BILLING_ENV": "staging"}, "BILLING_ENV"),
    ({"TRIAL_DAYS": "two weeks"}, "TRIAL_DAYS"),
    ({"TRIAL_DAYS": "0"}, "TRIAL_DAYS"),
    ({"TIMEZONE": "Mars/Olympus"}, "TIMEZONE"),
    ({"SMTP_TLS": "maybe"}, "SMTP_TLS"),
    ({"SMTP_PORT": "smtp"}, "SMTP_PORT"),
    ({"VAT_RATE": "twenty"}, "VAT_RATE"),
    ({"TRUSTED_PROXIES": "not-an-ip"}, "TRUSTED_PROXIES"),
])
def test_bad_values_are_refused_with_the_setting_named(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, **env)


def test_production_with_everything_set_starts(tmp_path):
    s = load(tmp_path, **PRODUCTION)
    assert s.is_production and s.https
    assert not (tmp_path / "data" / "secret_key").exists()  # nothing generated in production


@pytest.mark.parametrize("missing, reason", [
    ("BILLING_SECRET_KEY", "BILLING_SECRET_KEY is not set"),
    ("BASE_URL", "BASE_URL is not set"),
    ("SMTP_HOST", "SMTP_HOST is not set"),
    ("MAIL_FROM", "MAIL_FROM is not set"),
    ("PAYTR_MERCHANT_ID", "PAYTR_MERCHANT_ID"),
    ("PAYTR_MERCHANT_KEY", "PAYTR_MERCHANT_KEY"),
    ("PAYTR_MERCHANT_SALT", "PAYTR_MERCHANT_SALT"),
    ("SELLER_LEGAL_NAME", "SELLER_LEGAL_NAME is not set"),
    ("SELLER_ADDRESS", "SELLER_ADDRESS is not set"),
    ("SELLER_TAX_OFFICE", "SELLER_TAX_OFFICE is not set"),
    ("SELLER_TAX_NUMBER", "SELLER_TAX_NUMBER is not set"),
])
def test_production_refuses_a_missing_secret_or_setting(tmp_path, missing, reason):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    with pytest.raises(ConfigError, match=reason):
        load(tmp_path, **env)


@pytest.mark.parametrize("override, reason", [
    ({"BILLING_SECRET_KEY": "short"}, "too short"),
    ({"BASE_URL": "http://billing.example.com"}, "https"),
    ({"PAYTR_API_BASE": "emulator"}, "emulator"),
    ({"PAYTR_TEST_MODE": "1"}, "PAYTR_TEST_MODE=1"),
    ({"SELLER_TAX_NUMBER": "1234567891"}, "check digits"),  # as for buyers: VKN check digit
])
def test_production_refuses_development_defaults(tmp_path, override, reason):
    with pytest.raises(ConfigError, match=reason):
        load(tmp_path, **{**PRODUCTION, **override})


def test_production_refuses_the_generated_development_key(tmp_path):
    dev_key = str(load(tmp_path).secret_key)
    with pytest.raises(ConfigError, match="development key"):
        load(tmp_path, **{**PRODUCTION, "BILLING_SECRET_KEY": dev_key})


def test_test_mode_in_production_only_when_asked_for(tmp_path):
    s = load(tmp_path, **{**PRODUCTION, "PAYTR_TEST_MODE": "1", "ALLOW_TEST_MODE_IN_PRODUCTION": "1"})
    assert s.paytr_test_mode


def test_secrets_never_show_in_repr(tmp_path):
    s = load(tmp_path, **PRODUCTION)
    text = repr(s) + str(s)
    for secret in (GOOD_SECRET, "smtp-password-value", "merchant-key-value", "merchant-salt-value"):
        assert secret not in text


def test_main_refuses_to_start_in_production_with_a_one_line_reason(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "BILLING_ENV": "production", "BILLING_DATA_DIR": str(tmp_path / "d")}
    result = subprocess.run([sys.executable, "main.py", "migrate"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: refusing to start: BILLING_SECRET_KEY is not set (use 32 random bytes or more: "
                     "python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"]


def test_the_example_env_file_refuses_to_start_until_filled_in(tmp_path):
    """Copying .env.example as it is must not start production with empty secrets."""
    with pytest.raises(ConfigError, match="BILLING_SECRET_KEY is not set"):
        settings_module.load({}, env_file=ROOT / ".env.example")


def test_saved_cards_are_on_with_the_built_in_emulator_only(tmp_path):
    from billing import settings as settings_module
    base = {"BILLING_DATA_DIR": str(tmp_path / "data")}
    assert settings_module.load(base, env_file=None).paytr_recurring
    assert not settings_module.load({**base, "PAYTR_API_BASE": "http://127.0.0.1:8001"}, env_file=None).paytr_recurring
    assert not settings_module.load({**base, "PAYTR_RECURRING": "0"}, env_file=None).paytr_recurring
