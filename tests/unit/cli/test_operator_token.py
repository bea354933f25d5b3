"""Where the ``ktrdr`` command finds the operator token, and the file ``ktrdr up`` keeps."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ktrdr.cli.operator_token import (
    ensure_token_file,
    read_token_file,
    resolve_operator_token,
    write_token_file,
)
from ktrdr.config import ConfigurationError, Secret

TOKEN = "operator-token-7Qx"


def _resolve(option: str | None, environ: dict[str, str], tmp_path: Path) -> tuple[str, str]:
    found = resolve_operator_token(
        option, environ, token_file=tmp_path / "data" / "operator_token", env_file=None
    )
    return found.secret.reveal(), found.source


def _up_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data" / "operator_token"
    path.parent.mkdir(exist_ok=True)
    write_token_file(path, Secret(text))
    return path


def test_the_option_wins_over_everything(tmp_path: Path) -> None:
    """--token beats the variable, its _FILE and the up file."""
    _up_file(tmp_path, "from-the-file")
    environ = {"KTRDR_AUTH_OPERATOR_TOKEN": "from-the-env"}
    assert _resolve(TOKEN, environ, tmp_path) == (TOKEN, "--token")


def test_the_variable_then_its_file_then_the_up_file_then_the_default(tmp_path: Path) -> None:
    """Each source is used when the ones before it are absent, and named as the source."""
    secret = tmp_path / "secret"
    secret.write_text("from-the-secret-file\n")
    up_file = _up_file(tmp_path, "from-the-up-file")
    assert _resolve(None, {"KTRDR_AUTH_OPERATOR_TOKEN": "env-1"}, tmp_path) == (
        "env-1",
        "env KTRDR_AUTH_OPERATOR_TOKEN",
    )
    assert _resolve(None, {"KTRDR_AUTH_OPERATOR_TOKEN_FILE": str(secret)}, tmp_path) == (
        "from-the-secret-file",
        f"file {secret} (from KTRDR_AUTH_OPERATOR_TOKEN_FILE)",
    )
    assert _resolve(None, {"KTRDR_AUTH_WORKER_TOKEN": "not-this-one"}, tmp_path) == (
        "from-the-up-file",
        f"file {up_file}",
    )
    up_file.unlink()
    assert _resolve(None, {}, tmp_path) == (
        "local-dev-operator-token",
        "the development default; KTRDR_AUTH_OPERATOR_TOKEN unset",
    )


@pytest.mark.parametrize("bad", ["two words", "caf\u00e9", ""])
def test_a_token_a_header_cannot_carry_is_refused_naming_where(bad: str, tmp_path: Path) -> None:
    """A bad --token or variable: a ConfigurationError naming where, never the value."""
    with pytest.raises(ConfigurationError) as option:
        _resolve(bad or " ", {}, tmp_path)
    assert option.value.problems[0].startswith("--token: expected a token of visible ASCII")
    with pytest.raises(ConfigurationError) as env:
        _resolve(None, {"KTRDR_AUTH_OPERATOR_TOKEN": bad}, tmp_path)
    assert env.value.problems[0].startswith("KTRDR_AUTH_OPERATOR_TOKEN=")
    if bad.strip():
        assert bad not in str(option.value)
        assert bad not in str(env.value)


def test_a_worker_token_problem_does_not_stop_the_command(tmp_path: Path) -> None:
    """Only the operator token's own variables are read: a broken worker token is not ours."""
    environ = {"KTRDR_AUTH_WORKER_TOKEN": "two words", "KTRDR_AUTH_OPERATOR_TOKEN": TOKEN}
    assert _resolve(None, environ, tmp_path)[0] == TOKEN


def test_the_token_file_is_written_atomically_for_its_owner_only(tmp_path: Path) -> None:
    """0600, the token and a newline, no temporary file left beside it."""
    path = tmp_path / "d" / "operator_token"
    write_token_file(path, Secret(TOKEN))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == TOKEN + "\n"
    assert [p.name for p in path.parent.iterdir()] == ["operator_token"]
    assert read_token_file(path) == Secret(TOKEN)


def test_up_makes_a_token_once_and_keeps_it(tmp_path: Path) -> None:
    """The first run creates a random token; the next run keeps it (clients keep working)."""
    path = tmp_path / "operator_token"
    first, created = ensure_token_file(path)
    second, kept = ensure_token_file(path)
    assert (created, kept) == ("created", "kept")
    assert first == second
    assert len(first.reveal()) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_up_replaces_a_token_file_others_could_read(tmp_path: Path) -> None:
    """A group- or world-readable file may have leaked: a new token replaces it, 0600."""
    path = tmp_path / "operator_token"
    path.write_text("leaked-token\n")
    os.chmod(path, 0o644)
    token, what = ensure_token_file(path)
    assert what.startswith("replaced")
    assert token.reveal() != "leaked-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_up_replaces_a_symlink_without_writing_through_it(tmp_path: Path) -> None:
    """A symlink in the token's place is replaced by a file; its target is left alone."""
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    path = tmp_path / "operator_token"
    path.symlink_to(target)
    ensure_token_file(path)
    assert not path.is_symlink()
    assert target.read_text() == "untouched\n"
