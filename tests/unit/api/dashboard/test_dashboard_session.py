"""Dashboard sessions: signed, expiring, bound to the operator token; CSRF tokens per session."""

from __future__ import annotations

import datetime

import pytest
from freezegun import freeze_time

from ktrdr.api.dashboard.session import SESSION_MAX_AGE, DashboardSessions, cross_site
from ktrdr.config import Secret

TOKEN = Secret("operator-token-for-sessions")


def test_a_new_session_is_accepted_and_a_tampered_one_is_not() -> None:
    """The cookie value verifies; a changed byte, an empty or a foreign value does not."""
    sessions = DashboardSessions(TOKEN)
    cookie = sessions.new_session()
    session = sessions.session_id(cookie)
    assert session is not None
    assert TOKEN.reveal() not in cookie
    value, stamp, signature = cookie.split(".")
    other_value = ("A" if value[0] != "A" else "B") + value[1:]
    other_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert sessions.session_id(f"{other_value}.{stamp}.{signature}") is None
    assert sessions.session_id(f"{value}.{stamp}.{other_signature}") is None
    assert sessions.session_id("") is None
    assert sessions.session_id(None) is None
    assert sessions.session_id("not.a.session") is None


def test_a_session_expires_after_its_max_age() -> None:
    """12 hours after sign-in the cookie no longer opens anything."""
    sessions = DashboardSessions(TOKEN)
    with freeze_time("2026-01-01 08:00:00") as frozen:
        cookie = sessions.new_session()
        frozen.tick(SESSION_MAX_AGE - datetime.timedelta(seconds=1))
        assert sessions.session_id(cookie) is not None
        frozen.tick(datetime.timedelta(seconds=2))
        assert sessions.session_id(cookie) is None


def test_changing_the_operator_token_ends_every_session() -> None:
    """A cookie signed under the old token is refused under the new one."""
    cookie = DashboardSessions(TOKEN).new_session()
    assert DashboardSessions(Secret("the-rotated-operator-token")).session_id(cookie) is None


def test_a_csrf_token_belongs_to_one_session() -> None:
    """Each session has its own CSRF token; another session's, or none, does not match."""
    sessions = DashboardSessions(TOKEN)
    first = sessions.session_id(sessions.new_session())
    second = sessions.session_id(sessions.new_session())
    assert first is not None
    assert second is not None
    token = sessions.csrf_token(first)
    assert sessions.csrf_matches(first, token)
    assert not sessions.csrf_matches(second, token)
    assert not sessions.csrf_matches(first, None)
    assert not sessions.csrf_matches(first, "é" + token)


@pytest.mark.parametrize(
    ("value", "foreign"),
    [
        ("cross-site", True),
        ("same-site", True),
        ("Cross-Site", True),
        ("same-origin", False),
        ("none", False),
        (None, False),
    ],
)
def test_requests_another_site_started_are_recognised(value: str | None, foreign: bool) -> None:
    """Sec-Fetch-Site cross-site or same-site is foreign; same-origin, none or absent is not."""
    assert cross_site(value) is foreign
