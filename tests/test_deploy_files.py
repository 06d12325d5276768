"""deploy/ and .env.example: what an operator copies must match the code it configures."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from billing import settings as settings_module

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VALID_VKN = "1234567890"


def setting_keys() -> set[str]:
    """Every environment key billing/settings.py reads: get("X"), number("X", …), flag("X", …) and
    aliased("NEW", "OLD") — read from the source, so a new setting cannot be forgotten here."""
    source = (ROOT / "billing" / "settings.py").read_text()
    keys = set(re.findall(r'\b(?:get|number|flag)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    for new, old in re.findall(r'\baliased\(\s*"([A-Z0-9_]+)",\s*"([A-Z0-9_]+)"', source):
        keys |= {new, old}
    return keys


def example_keys() -> set[str]:
    """Keys assigned in .env.example, set or shown commented out with their default."""
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))


def test_the_settings_parser_finds_the_settings():
    keys = setting_keys()
    # A sample of each way a key is read, so a changed helper name cannot make this test empty.
    assert {"BILLING_SECRET_KEY", "SMTP_PORT", "PAYTR_TEST_MODE", "SELLER_LEGAL_NAME", "SELLER_NAME"} <= keys
    assert len(keys) >= 45


def test_env_example_covers_every_setting():
    missing = sorted(setting_keys() - example_keys())
    assert not missing, f".env.example does not mention {', '.join(missing)}"


def test_env_example_filled_in_starts_production(tmp_path):
    """Filling in only the blanks the example leaves is enough for production's start-up checks."""
    text = (ROOT / ".env.example").read_text()
    blanks = {"BILLING_SECRET_KEY": "Zx8" + "q7Lw2Vb9Rt4Ny6Kp1Hs3Jd5Gf0Mc8Xa2Ue4Io6Pl9Tr1Wy3",
              "PAYTR_MERCHANT_ID": "123456", "PAYTR_MERCHANT_KEY": "mK3pQ9vX2wR7tY5z",
              "PAYTR_MERCHANT_SALT": "sL8nB4cV6xZ1aQ3w", "SELLER_TAX_NUMBER": VALID_VKN,
              "BILLING_DATA_DIR": str(tmp_path / "data")}
    for key, value in blanks.items():
        text = re.sub(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    settings = settings_module.load({}, env_file=env_file)
    assert settings.is_production and settings.https and not settings.paytr_test_mode
    assert settings.paytr_api_base == "https://www.paytr.com"
    assert settings.trusted_proxies == ("127.0.0.1",)
    assert settings.seller_name == "Example Yazılım Ltd. Şti."  # UTF-8 survives the file
    assert settings.mail_from == "Billing <billing@example.com>"


# --- systemd ---------------------------------------------------------------------------


def unit(name: str = "billing.service") -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_systemd_unit_is_hardened():
    u = unit()
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "PrivateDevices": "yes", "User": "paytr-billing", "UMask": "0077", "CapabilityBoundingSet": "",
                "KillSignal": "SIGTERM", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}
    for key, value in expected.items():
        assert u.get(key) == [value], f"{key}={u.get(key)}"
    # Writable: the data directory (and the backups, when used); everything else read-only.
    assert "/var/lib/paytr-billing" in u["ReadWritePaths"]
    assert u["ExecStart"] == ["/opt/paytr-billing/.venv/bin/python main.py --host 127.0.0.1 --port 8000"]
    assert u["WorkingDirectory"] == ["/opt/paytr-billing"]  # where the app reads its .env
    example = (ROOT / ".env.example").read_text()
    assert "BILLING_DATA_DIR=/var/lib/paytr-billing" in example
    assert "TRUSTED_PROXIES=127.0.0.1" in example
    # A refused configuration (exit code 2) must not restart in a loop.
    assert u["RestartPreventExitStatus"] == ["2"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path):
    result = subprocess.run(["systemd-analyze", "verify", str(DEPLOY / "billing.service")],
                            capture_output=True, text=True, timeout=60)
    # The only complaint allowed on a machine without the install is the missing virtualenv.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "/opt/paytr-billing/.venv/bin/python" not in line]
    assert not problems, problems


def test_second_web_process_keeps_the_hardening_and_does_not_tick(tmp_path):
    # systemd applies the drop-in over the copied unit: ExecStart= empties the list, then the new port.
    u, drop_in = unit(), unit("billing-web2.conf")
    assert drop_in["ExecStart"] == ["", "/opt/paytr-billing/.venv/bin/python main.py --host 127.0.0.1 --port 8001"]
    assert drop_in["Environment"] == ["BILLING_SCHEDULER=0"]
    assert not set(drop_in) - {"ExecStart", "Environment", "Description"}  # nothing of the hardening undone
    assert u["ExecStart"][0].endswith("--port 8000")
    # Both processes read the same .env; the unit's Environment= wins over it.
    env_file = tmp_path / ".env"
    env_file.write_text(f"BILLING_SCHEDULER=1\nBILLING_DATA_DIR={tmp_path / 'data'}\n")
    assert settings_module.load({}, env_file=env_file).scheduler is True
    assert settings_module.load({"BILLING_SCHEDULER": "0"}, env_file=env_file).scheduler is False
    for proxy in ("nginx.conf", "Caddyfile"):
        assert "127.0.0.1:8001" in (DEPLOY / proxy).read_text(), proxy  # shown, to uncomment


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_second_web_process_verifies(tmp_path):
    (tmp_path / "paytr-billing-web2.service.d").mkdir()
    shutil.copy(DEPLOY / "billing.service", tmp_path / "paytr-billing-web2.service")
    shutil.copy(DEPLOY / "billing-web2.conf", tmp_path / "paytr-billing-web2.service.d" / "web2.conf")
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "paytr-billing-web2.service")],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "/opt/paytr-billing/.venv/bin/python" not in line]
    assert not problems, problems


# --- the proxies -------------------------------------------------------------------------


def test_proxies_agree_with_the_app():
    caddy = (DEPLOY / "Caddyfile").read_text()
    nginx = (DEPLOY / "nginx.conf").read_text()
    for text in (caddy, nginx):
        assert "127.0.0.1:8000" in text  # where billing.service listens
        assert "/billing/callback" in text  # PayTR's path, with its own small body limit
    # The callback body limit matches what the app itself accepts.
    from billing.web import callback

    assert callback.MAX_BODY == 64 * 1024
    assert "max_size 64KB" in caddy and "client_max_body_size 64k;" in nginx
    assert "max_size 1MB" in caddy and "client_max_body_size 1m;" in nginx
    # Slow clients: header and body timeouts.
    assert "read_header 10s" in caddy and "read_body 30s" in caddy
    assert "client_header_timeout 10s;" in nginx and "client_body_timeout 30s;" in nginx
    # nginx replaces a client's X-Forwarded-For rather than appending to it.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in nginx
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for" not in nginx
    # /metrics is not served to the internet through the proxy.
    assert "respond /metrics 404" in caddy
    assert re.search(r"location = /metrics \{\s*return 404;", nginx)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx)")
def test_nginx_site_passes_nginx_t(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem"), "-days", "1", "-subj", "/CN=billing.example.com"],
                   check=True, capture_output=True, timeout=60)
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/billing.example.com/fullchain.pem", str(tmp_path / "cert.pem"))
    site = site.replace("/etc/letsencrypt/live/billing.example.com/privkey.pem", str(tmp_path / "key.pem"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                                         f"events {{}}\nhttp {{\n    include {tmp_path}/site.conf;\n}}\n")
    (tmp_path / "logs").mkdir()
    result = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path) + "/"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
def test_caddyfile_validates():
    result = subprocess.run(["caddy", "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
