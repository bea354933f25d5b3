"""EnvLoader: the mapping it is given, environs' hooks, dotenv, _FILE, precedence, sources."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import attrs
import environs
import pytest

from ktrdr.config import ConfigurationError, EnvLoader, Secret, Source, SourceKind, checks
from ktrdr.config import converter as converter_module
from ktrdr.config.converter import Converter
from ktrdr.config.fields import setting
from ktrdr.config.loader import DeprecatedUse, Problem, mapping_env
from ktrdr.config.settings import APISettings, AuthSettings, DatabaseSettings, WorkerSettings


@attrs.frozen(kw_only=True)
class _Derived:
    """A settings class whose derived default can fail its check."""

    PREFIX = "KTRDR_T_"
    name: str = setting("ok", help="a name")
    url: str = setting(
        help="derived from name",
        factory=lambda self: f"http://{self.name}",
        default_doc="http://<name>",
        check=checks.HTTP_URL,
    )


def test_environs_hooks_the_loader_relies_on_exist() -> None:
    """environs still has the private hooks the loader overrides or calls (pinned on upgrade)."""
    assert list(inspect.signature(environs.Env._get_value).parameters) == [
        "self",
        "env_key",
        "default",
    ]
    assert list(inspect.signature(environs.Env._get_from_environ).parameters)[:3] == [
        "self",
        "key",
        "default",
    ]
    assert "override" in inspect.signature(environs.Env._load_dotenv).parameters
    env = mapping_env()({"KTRDR_X": "from-mapping"})
    assert env._get_from_environ("KTRDR_X", None) == ("KTRDR_X", "from-mapping", None)
    assert env.str("KTRDR_X") == "from-mapping"  # environs' own API goes through the hook


def test_reads_only_the_given_mapping() -> None:
    """A variable of the real process environment is invisible to a loader given {}."""
    name = next(iter(os.environ))  # any variable this process really has
    loader = EnvLoader({}, env_file=None)
    assert loader.raw(name) is None
    assert name not in loader.names_set()
    assert EnvLoader({name: "x"}, env_file=None).raw(name) == "x"


def test_never_writes_the_process_environment(tmp_path: Path) -> None:
    """Loading with a dotenv file leaves os.environ exactly as it was."""
    env_file = tmp_path / ".env.local"
    env_file.write_text("KTRDR_API_PORT=9100\nSOMETHING_ELSE=1\n")
    before = dict(os.environ)
    api = EnvLoader({}, env_file=env_file).load(APISettings)
    assert api.port == 9100
    assert dict(os.environ) == before


def test_dotenv_values_are_literal(tmp_path: Path) -> None:
    """${VAR} in the dotenv file is not expanded (expansion would read os.environ)."""
    env_file = tmp_path / ".env.local"
    env_file.write_text("KTRDR_WORKER_HOST=${HOME}-host\n")
    worker = EnvLoader({"HOME": "/h"}, env_file=env_file).load(WorkerSettings)
    assert worker.host == "${HOME}-host"


def test_process_environment_wins_over_dotenv(tmp_path: Path) -> None:
    """A variable set in both places takes the environment's value; the source says so."""
    env_file = tmp_path / ".env.local"
    env_file.write_text("KTRDR_API_PORT=9100\nKTRDR_API_HOST=10.0.0.1\n")
    loader = EnvLoader({"KTRDR_API_PORT": "9200"}, env_file=env_file)
    result = loader.load_result(APISettings)
    assert result.settings == APISettings(host="10.0.0.1", port=9200)
    assert result.sources["port"] == Source(SourceKind.ENV, "KTRDR_API_PORT")
    assert result.sources["host"] == Source(SourceKind.DOTENV, "KTRDR_API_HOST", path=str(env_file))
    assert result.sources["host"].describe() == f"dotenv {env_file}: KTRDR_API_HOST"


def test_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    """The dotenv file is optional: a missing one means defaults, no problem."""
    loader = EnvLoader({}, env_file=tmp_path / "absent.env")
    assert loader.file_problems == ()
    assert loader.load(APISettings) == APISettings()


def test_unreadable_dotenv_file_is_a_problem(tmp_path: Path) -> None:
    """A dotenv path that is a directory or not UTF-8 is reported, naming the path."""
    assert EnvLoader({}, env_file=tmp_path).file_problems == (
        Problem(
            str(tmp_path),
            None,
            "expected a readable UTF-8 dotenv file (path must be a filename, not a directory.)",
        ),
    )
    binary = tmp_path / "bin.env"
    binary.write_bytes(b"KTRDR_API_PORT=\xff\xfe\n")
    (problem,) = EnvLoader({}, env_file=binary).file_problems
    assert problem.variable == str(binary)
    assert problem.expected.startswith("expected a readable UTF-8 dotenv file (")
    with pytest.raises(ConfigurationError, match="expected a readable UTF-8 dotenv file"):
        EnvLoader({}, env_file=binary).load(APISettings)


def test_precedence_env_then_deprecated_then_file_then_dotenv(tmp_path: Path) -> None:
    """Highest first: new name, old name, NAME_FILE, dotenv (new, then old), default."""
    secret = tmp_path / "port"
    secret.write_text("7003\n")
    env_file = tmp_path / ".env.local"
    env_file.write_text("KTRDR_DB_PORT=7004\nDB_PORT=7005\n")
    layers = {
        "KTRDR_DB_PORT": "7001",
        "DB_PORT": "7002",
        "KTRDR_DB_PORT_FILE": str(secret),
    }
    expected = [
        (7001, Source(SourceKind.ENV, "KTRDR_DB_PORT")),
        (7002, Source(SourceKind.DEPRECATED, "DB_PORT")),
        (7003, Source(SourceKind.SECRET_FILE, "KTRDR_DB_PORT_FILE", path=str(secret))),
        (7004, Source(SourceKind.DOTENV, "KTRDR_DB_PORT", path=str(env_file))),
    ]
    for port, source in expected:
        result = EnvLoader(layers, env_file=env_file).load_result(DatabaseSettings)
        assert result.settings is not None
        assert (result.settings.port, result.sources["port"]) == (port, source)
        if source.variable in layers:
            del layers[source.variable]
    env_file.write_text("DB_PORT=7005\n")
    result = EnvLoader({}, env_file=env_file).load_result(DatabaseSettings)
    assert result.settings is not None
    assert result.settings.port == 7005
    assert result.sources["port"] == Source(
        SourceKind.DOTENV, "DB_PORT", path=str(env_file), deprecated=True
    )
    assert result.sources["port"].describe() == f"dotenv {env_file}: DB_PORT (deprecated)"
    assert result.deprecations == (DeprecatedUse("DB_PORT", "KTRDR_DB_PORT"),)


def test_secret_file_value_is_stripped_and_stays_secret(tmp_path: Path) -> None:
    """A docker-secret file's trailing newline is dropped; the value is a masked Secret."""
    token = tmp_path / "token"
    token.write_text("file-token-91\n")
    result = EnvLoader({"KTRDR_AUTH_WORKER_TOKEN_FILE": str(token)}, env_file=None).load_result(
        AuthSettings
    )
    assert result.settings == AuthSettings(worker_token=Secret("file-token-91"))
    assert result.sources["worker_token"].describe() == (
        f"file {token} (from KTRDR_AUTH_WORKER_TOKEN_FILE)"
    )
    assert "file-token-91" not in repr(result)


@pytest.mark.parametrize(
    ("make_path", "reason"),
    [
        (lambda d: d / "missing", "file not found"),
        (lambda d: d, "is a directory"),
        (lambda d: Path("/dev/null"), "is not a regular file"),
    ],
    ids=["missing", "directory", "device"],
)
def test_bad_file_paths_name_the_file_variable(
    tmp_path: Path, make_path: object, reason: str
) -> None:
    """NAME_FILE pointing at nothing usable is a problem naming NAME_FILE and the path."""
    path = make_path(tmp_path)  # type: ignore[operator]
    with pytest.raises(ConfigurationError) as caught:
        EnvLoader({"KTRDR_AUTH_WORKER_TOKEN_FILE": str(path)}, env_file=None).load(AuthSettings)
    assert caught.value.problems == (
        f"KTRDR_AUTH_WORKER_TOKEN_FILE={str(path)!r}: {reason}; "
        "expected the path of a readable file holding the value",
    )


def test_empty_file_path_and_oversized_or_binary_files(tmp_path: Path) -> None:
    """An empty path, a file over 64 KiB and a non-UTF-8 file are each a clear problem."""
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe")
    cases = {
        " ": "expected the path of a readable file holding the value",
        str(big): "expected a file of at most 65536 bytes",
        str(binary): "expected a UTF-8 text file",
    }
    for path, expected in cases.items():
        loader = EnvLoader({"KTRDR_API_PORT_FILE": path}, env_file=None)
        assert loader.load_result(APISettings).problems == (
            Problem("KTRDR_API_PORT_FILE", path, expected),
        )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    """A file without read permission is reported as such."""
    locked = tmp_path / "locked"
    locked.write_text("x")
    locked.chmod(0)
    loader = EnvLoader({"KTRDR_API_HOST_FILE": str(locked)}, env_file=None)
    (problem,) = loader.load_result(APISettings).problems
    assert problem.expected.startswith("permission denied")


def test_invalid_file_content_is_never_shown(tmp_path: Path) -> None:
    """A bad value read from a file is reported by variable and path, not by content."""
    port = tmp_path / "port"
    port.write_text("not-a-port-content\n")
    result = EnvLoader({"KTRDR_API_PORT_FILE": str(port)}, env_file=None).load_result(APISettings)
    assert [str(p) for p in result.problems] == [
        f"KTRDR_API_PORT_FILE={str(port)!r}: the file's content: expected a whole number"
    ]


@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_empty_values_are_problems_that_say_how_to_get_the_default(raw: str) -> None:
    """A set-but-empty variable is an error telling the user to unset it for the default."""
    result = EnvLoader({"KTRDR_API_PORT": raw}, env_file=None).load_result(APISettings)
    assert result.problems == (
        Problem(
            "KTRDR_API_PORT",
            raw,
            "set but empty; expected a whole number, or unset it to use the default (8000)",
        ),
    )


def test_every_problem_of_a_class_is_collected() -> None:
    """load() raises once with every problem of the class, not just the first."""
    with pytest.raises(ConfigurationError) as caught:
        EnvLoader({"KTRDR_API_HOST": "a b", "KTRDR_API_PORT": "x"}, env_file=None).load(APISettings)
    assert caught.value.problems == (
        "KTRDR_API_HOST='a b': expected a host name or IP address, e.g. 0.0.0.0 or db.internal",
        "KTRDR_API_PORT='x': expected a whole number",
    )


def test_long_values_are_cut_in_reports() -> None:
    """A huge value is shown cut to 120 characters with its length."""
    result = EnvLoader({"KTRDR_API_HOST": "h" * 500 + " x"}, env_file=None).load_result(APISettings)
    assert str(result.problems[0]) == (
        f"KTRDR_API_HOST={'h' * 120!r}... (502 characters): "
        "expected a host name or IP address, e.g. 0.0.0.0 or db.internal"
    )


def test_failing_derived_default_names_the_variable() -> None:
    """When a computed default fails its check, the problem says which variable to set."""
    result = EnvLoader({"KTRDR_T_NAME": "a b"}, env_file=None).load_result(_Derived)
    assert result.problems == (
        Problem(
            "KTRDR_T_URL",
            None,
            "the default (http://<name>) is not valid here: expected an http:// or https:// "
            "URL with a host, e.g. http://backend:8000; set KTRDR_T_URL",
        ),
    )


def test_a_load_builds_no_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values are structured by hooks resolved once per class: loading builds no converter."""
    EnvLoader({"KTRDR_API_PORT": "1"}, env_file=None).load(APISettings)  # hooks resolved

    def no_converter() -> Converter:
        raise AssertionError("a load built a converter")

    monkeypatch.setattr(converter_module, "make_converter", no_converter)
    loaded = EnvLoader({"KTRDR_API_PORT": "81"}, env_file=None).load(APISettings)

    assert loaded.port == 81


def test_a_given_converter_structures_the_values() -> None:
    """A converter handed to the loader is used instead of the project's hooks."""
    converter = converter_module.make_converter()
    converter.register_structure_hook(int, lambda raw, _type: 8080)

    loaded = EnvLoader({"KTRDR_API_PORT": "1"}, env_file=None, converter=converter)

    assert loaded.load(APISettings).port == 8080


def test_sources_cover_every_field() -> None:
    """Every field has a source, defaults included."""
    result = EnvLoader({"KTRDR_API_PORT": "81"}, env_file=None).load_result(APISettings)
    assert dict(result.sources) == {
        "host": Source(SourceKind.DEFAULT),
        "port": Source(SourceKind.ENV, "KTRDR_API_PORT"),
        "docs": Source(SourceKind.DEFAULT),
    }
    assert result.sources["host"].describe() == "default"


@pytest.mark.parametrize(
    ("dotenv", "loaded"), [(False, "False False"), (True, "True True")], ids=["none", "dotenv"]
)
def test_environs_is_imported_only_to_read_a_dotenv_file(
    tmp_path: Path, dotenv: bool, loaded: str
) -> None:
    """Without a dotenv file, a load imports neither environs nor marshmallow; with one, it does."""
    if dotenv:
        (tmp_path / ".env.local").write_text("KTRDR_API_PORT=8001\n")
    code = (
        "import sys\n"
        "from ktrdr.config import APISettings, EnvLoader\n"
        "loader = EnvLoader({'KTRDR_API_HOST': '0.0.0.0'}, env_file='.env.local')\n"
        "settings = loader.load(APISettings)\n"
        "print(settings.host, settings.port, 'environs' in sys.modules,"
        " 'marshmallow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )
    port = 8001 if dotenv else 8000
    assert done.stdout.strip() == f"0.0.0.0 {port} {loaded}"
