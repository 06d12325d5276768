"""Owners invite colleagues by email; members see billing but cannot manage the team."""

import re

from billing.db import rows
from conftest import PASSWORD, login, outbox, post, register, second_browser


def invite_link(db, to):
    mail = [m for m in outbox(db, template="invite") if m["to_addr"] == to][-1]
    return re.search(r"http://testserver(/auth/invite/\S+)", mail["body_text"]).group(1)


def invite_and_join(client, app, db, email="uye@example.com", name="Üye Kişi"):
    """The owner (logged in on `client`) invites `email`, who joins in a second browser."""
    post(client, "/billing/team/invite", {"email": email}, token_from="/billing/team")
    colleague = second_browser(app)
    link = invite_link(db, email)
    post(colleague, link, {"name": name, "password": PASSWORD}, token_from=link)
    return colleague


def test_owner_invites_a_colleague_who_joins_the_company(app, client, db):
    register(client, company="Deniz Lojistik")
    response = post(client, "/billing/team/invite", {"email": "Can@Example.com", "role": "member"},
                    token_from="/billing/team")
    assert response.status_code == 303
    page = client.get("/billing/team")
    assert "can@example.com" in page.text and "Pending invitations" in page.text
    [mail] = outbox(db, template="invite")
    assert mail["subject"] == "Ayşe Yılmaz invited you to Deniz Lojistik on PayTR Billing"

    colleague = second_browser(app)
    link = invite_link(db, "can@example.com")
    page = colleague.get(link)
    assert "Join Deniz Lojistik" in page.text and "can@example.com" in page.text
    bad = post(colleague, link, {"name": "", "password": "short"}, token_from=link)
    assert bad.status_code == 422 and "Enter your name." in bad.text
    joined = post(colleague, link, {"name": "Can Demir", "password": PASSWORD}, token_from=link)
    assert joined.status_code == 303
    dashboard = colleague.get("/billing/")
    assert "Deniz Lojistik" in dashboard.text
    # members can look but not invite
    assert post(colleague, "/billing/team/invite", {"email": "x@example.com"},
                token_from="/billing/team").status_code == 403
    assert colleague.get(link).status_code == 410  # the link is used up
    members = rows(db, "SELECT email, role FROM users ORDER BY id")
    assert members == [{"email": "ayse@example.com", "role": "owner"}, {"email": "can@example.com", "role": "member"}]


def test_invite_errors_and_withdrawal(client, db):
    register(client)
    bad = post(client, "/billing/team/invite", {"email": "nope"}, token_from="/billing/team")
    assert bad.status_code == 422 and "valid email" in bad.text
    self_invite = post(client, "/billing/team/invite", {"email": "ayse@example.com"}, token_from="/billing/team")
    assert self_invite.status_code == 422 and "already has an account" in self_invite.text
    post(client, "/billing/team/invite", {"email": "temp@example.com"}, token_from="/billing/team")
    link = invite_link(db, "temp@example.com")
    invite_id = rows(db, "SELECT id FROM invites")[0]["id"]
    post(client, f"/billing/team/invites/{invite_id}/withdraw", token_from="/billing/team")
    assert "temp@example.com" not in client.get("/billing/team").text
    assert client.get(link).status_code == 410


def test_owner_removes_a_member_and_their_sessions_end(app, client, db):
    register(client)
    colleague = invite_and_join(client, app, db, "gone@example.com", "Gone Soon")
    assert colleague.get("/billing/", follow_redirects=False).status_code == 200
    member_id = rows(db, "SELECT id FROM users WHERE email = 'gone@example.com'")[0]["id"]
    assert post(client, f"/billing/team/members/{member_id}/remove", token_from="/billing/team").status_code == 303
    assert colleague.get("/billing/", follow_redirects=False).status_code == 303
    assert login(client, email="gone@example.com").status_code == 422


def test_companies_cannot_touch_each_others_team(app, client, db):
    register(client, email="one@example.com")
    client.cookies.clear()
    register(client, email="two@example.com", company="Other Co")
    one_id = rows(db, "SELECT id FROM users WHERE email = 'one@example.com'")[0]["id"]
    response = post(client, f"/billing/team/members/{one_id}/remove", token_from="/billing/team")
    assert response.status_code == 404
    assert rows(db, "SELECT count(*) AS n FROM users")[0]["n"] == 2
