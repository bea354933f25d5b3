"""Value types: secrets never show themselves; enums hold the accepted spellings."""

from __future__ import annotations

import copy
import pickle

import attrs

from ktrdr.config import AuthSettings, DatabaseSettings, Environment, Secret


def test_secret_is_masked_in_every_rendering() -> None:
    """str, repr, format and f-strings of a Secret show ******** only."""
    secret = Secret("hunter2-value")
    rendered = [str(secret), repr(secret), f"{secret}", f"{secret!r}", format(secret, "")]
    assert rendered == [
        "********",
        "Secret('********')",
        "********",
        "Secret('********')",
        "********",
    ]
    assert secret.reveal() == "hunter2-value"


def test_secret_never_leaks_through_settings_repr_or_asdict() -> None:
    """A settings repr hides secret fields, and attrs.asdict keeps the Secret object whole."""
    auth = AuthSettings(worker_token=Secret("tok-xyz-123"))
    database = DatabaseSettings(password=Secret("pw-xyz-123"))
    assert "tok-xyz-123" not in repr(auth)
    assert "pw-xyz-123" not in repr(database)
    assert "password" not in repr(database)
    dumped = attrs.asdict(database)
    assert dumped["password"] == Secret("pw-xyz-123")
    assert "pw-xyz-123" not in repr(dumped)


def test_secret_equality_hash_copy_and_pickle() -> None:
    """Secrets compare by value, hash consistently and survive copy and pickle."""
    secret = Secret("a")
    assert secret == Secret("a")
    assert secret != Secret("b")
    assert secret != "a"
    assert hash(secret) == hash(Secret("a"))
    assert copy.deepcopy(secret).reveal() == "a"
    assert pickle.loads(pickle.dumps(secret)).reveal() == "a"  # noqa: S301 - our own data


def test_environment_values() -> None:
    """KTRDR_ENV has exactly the three documented values."""
    assert [e.value for e in Environment] == ["development", "production", "test"]
