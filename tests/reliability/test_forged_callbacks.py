"""Forged callbacks change nothing. A thousand of them (bad hashes, signatures lifted onto
altered fields, missing fields, garbage bodies, wrong methods), aimed at pending, paid and
failed orders and at orders that never existed, each get a 4xx, and afterwards every row of
every table is exactly as it was."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections import Counter
from urllib.parse import urlencode

import pytest

from billing.paytr import protocol

from .support import Shot, dump, dump_difference, encode, failed_form, fire, scalar, seed_orders, success_form, \
    wait_until

pytestmark = pytest.mark.slow

FORGERIES = 1000
SIGNED = ("merchant_oid", "status", "total_amount", "hash")


class Forger:
    """Makes forged callbacks from genuine ones; every kind must be refused with a 4xx."""

    def __init__(self, rng: random.Random, settings, genuine: list[dict]):
        self.rng = rng
        self.key = str(settings.paytr_merchant_key)
        self.salt = str(settings.paytr_merchant_salt)
        self.genuine = genuine  # real, correctly signed forms (success and failed) of our orders
        self.kinds = [name for name in dir(self) if name.startswith("forge_")]

    def shot(self) -> Shot:
        kind = self.rng.choice(self.kinds)
        shot = getattr(self, kind)(dict(self.rng.choice(self.genuine)))
        return Shot(shot.body, shot.method, shot.content_type, label=kind.removeprefix("forge_"))

    def _sign(self, oid, status, total, key=None, salt=None) -> str:
        return protocol.callback_hash(oid, status, total, key or self.key, salt or self.salt)

    # --- wrong hashes -------------------------------------------------------------------

    def forge_random_hash(self, form):
        form["hash"] = base64.b64encode(self.rng.randbytes(32)).decode()
        return Shot(encode(form))

    def forge_hash_with_wrong_key(self, form):
        form["hash"] = self._sign(form["merchant_oid"], form["status"], form["total_amount"], key="NOTTHEKEY123456")
        return Shot(encode(form))

    def forge_hash_with_wrong_salt(self, form):
        form["hash"] = self._sign(form["merchant_oid"], form["status"], form["total_amount"], salt="NOTTHESALT12345")
        return Shot(encode(form))

    def forge_hash_in_the_wrong_field_order(self, form):
        message = f"{form['merchant_oid']}{form['status']}{form['total_amount']}{self.salt}"
        form["hash"] = base64.b64encode(hashlib.sha256((self.key + message).encode()).digest()).decode()
        return Shot(encode(form))

    def forge_hash_re_encoded(self, form):
        raw = base64.b64decode(form["hash"])
        form["hash"] = self.rng.choice([raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
                                        form["hash"] + "\n", " " + form["hash"], form["hash"].lower(),
                                        form["hash"][:-4]])
        return Shot(encode(form))

    # --- a real signature over fields that were changed afterwards ----------------------

    def forge_other_orders_oid(self, form):
        other = self.rng.choice([f for f in self.genuine if f["merchant_oid"] != form["merchant_oid"]])
        form["merchant_oid"] = other["merchant_oid"]
        return Shot(encode(form))

    def forge_flipped_status(self, form):
        form["status"] = "failed" if form["status"] == "success" else "success"
        return Shot(encode(form))

    def forge_altered_total(self, form):
        total = form["total_amount"]
        form["total_amount"] = self.rng.choice([str(int(total) * 10 + 1), str(max(int(total) - 1, 0) or 1),
                                                total + "00", "0" + total, "100000000", "1"])
        if form["total_amount"] == total:
            form["total_amount"] = total + "1"
        return Shot(encode(form))

    def forge_status_lookalike(self, form):
        # Cyrillic 'е', a trailing NUL, another case: the signature was over the real word.
        form["status"] = self.rng.choice(["succ\u0435ss", "success\x00", "SUCCESS", "Success", "failed ", "fail"])
        return Shot(encode(form))

    def forge_oid_with_junk(self, form):
        form["merchant_oid"] = form["merchant_oid"] + self.rng.choice(["\x00", "'; DROP TABLE payments;--", " ",
                                                                       "%", "A" * 5000])
        return Shot(encode(form))

    def forge_parameter_pollution(self, form):
        # The signature covers the first merchant_oid; a second one tries to slip in after it.
        other = self.rng.choice([f for f in self.genuine if f["merchant_oid"] != form["merchant_oid"]])
        body = urlencode(list(form.items()) + [("merchant_oid", other["merchant_oid"])]).encode()
        return Shot(body)

    def forge_order_that_never_existed(self, form):
        form["merchant_oid"] = "PB999999T20261127000000" + self.rng.randbytes(6).hex().upper()
        return Shot(encode(form))  # the hash is still the real order's

    # --- signed but malformed: the hash verifies, the content is impossible ------------

    def forge_signed_unknown_status(self, form):
        form["status"] = self.rng.choice(["pending", "refunded", "SUCCESS", "ok", "1"])
        form["hash"] = self._sign(form["merchant_oid"], form["status"], form["total_amount"], key="NOTTHEKEY123456") \
            if self.rng.random() < 0.5 else self._sign(form["merchant_oid"], form["status"], form["total_amount"])
        return Shot(encode(form))

    def forge_signed_bad_total(self, form):
        form["total_amount"] = self.rng.choice(["29.00", "-2900", "2900abc", "1e3", "0x10", "²"])
        form["hash"] = self._sign(form["merchant_oid"], form["status"], form["total_amount"])
        return Shot(encode(form))

    # --- missing and empty fields ------------------------------------------------------

    def forge_missing_fields(self, form):
        for name in self.rng.sample(SIGNED, self.rng.randint(1, len(SIGNED))):
            del form[name]
        return Shot(encode(form))

    def forge_empty_field(self, form):
        form[self.rng.choice(SIGNED)] = ""
        return Shot(encode(form))

    def forge_only_the_hash(self, form):
        return Shot(encode({"hash": form["hash"]}))

    # --- not a callback form at all ----------------------------------------------------

    def forge_random_bytes(self, form):
        return Shot(self.rng.randbytes(self.rng.randint(1, 2000)), content_type=self.rng.choice(
            ["application/x-www-form-urlencoded", "application/octet-stream", None]))

    def forge_json_body(self, form):
        form["hash"] = "x" + form["hash"][1:]
        return Shot(json.dumps(form).encode(), content_type="application/json")

    def forge_empty_body(self, form):
        return Shot(b"", content_type=self.rng.choice(["application/x-www-form-urlencoded", None]))

    def forge_separators_only(self, form):
        return Shot(self.rng.choice([b"&&&===", b"=", b"&", b"%", b"%ZZ=%ZZ", b"hash", b"merchant_oid"]))

    def forge_invalid_utf8(self, form):
        body = encode({**form, "hash": "A" * 43 + "="}) + b"&merchant_oid=\xff\xfe\xfd" + self.rng.randbytes(8)
        return Shot(body)

    def forge_xml(self, form):
        body = "<callback>" + "".join(f"<{k}>{v}</{k}>" for k, v in form.items()) + "</callback>"
        return Shot(body.encode(), content_type="text/xml")

    def forge_oversized_body(self, form):
        form["hash"] = "A" * 43 + "="
        form["padding"] = "x" * (70 * 1024)
        return Shot(encode(form))

    def forge_wrong_method(self, form):
        return Shot(encode(form), method=self.rng.choice(["GET", "PUT", "PATCH", "DELETE"]))


def test_a_thousand_forged_callbacks_get_4xx_and_change_nothing(make_app, password_hash):
    app = make_app()
    orders = seed_orders(app.settings, 30, password_hash, tag="forge")
    app.start()
    db = app.database_path

    # Some orders paid, some failed, the rest still pending: forgeries meet every state.
    paid, failed = orders[:10], orders[10:15]
    genuine = [Shot(encode(success_form(app.settings, o.payment))) for o in paid] + \
              [Shot(encode(failed_form(app.settings, o.payment))) for o in failed]
    assert all((a.status, a.body) == (200, b"OK") for a in fire(app.callback_url, genuine)), app.tail()
    # Let the mail sender deliver what registration and payments queued, so the database is at rest.
    wait_until(lambda: scalar(db, "SELECT count(*) FROM outbox WHERE status = 'pending'") == 0, 30,
               "the outbox to drain", details=app.tail)
    before = dump(db)
    assert scalar(db, "SELECT count(*) FROM payments WHERE status = 'pending'") == 15

    rng = random.Random(4242)
    forms = [success_form(app.settings, o.payment) for o in orders] + \
            [failed_form(app.settings, o.payment) for o in orders]
    forger = Forger(rng, app.settings, forms)
    shots = [forger.shot() for _ in range(FORGERIES)]
    kinds = Counter(s.label for s in shots)
    assert len(kinds) == len(forger.kinds)  # every kind of forgery was tried

    answers = fire(app.callback_url, shots, concurrency=50)

    not_4xx = [a for a in answers if a.status is None or not 400 <= a.status < 500]
    assert not not_4xx, f"{len(not_4xx)} forged callbacks were not refused with a 4xx: {not_4xx[:8]}\n{app.tail()}"
    assert not [a for a in answers if a.body == b"OK"]
    after = dump(db)
    assert after == before, f"forged callbacks changed the database:\n{dump_difference(before, after)}"
    assert app.running, app.tail()
