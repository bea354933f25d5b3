"""WorkerSettings: defaults, every KTRDR_WORKER_* override, old names, derived defaults."""

from __future__ import annotations

import datetime

import attrs
import pytest
from config_helpers import load, problems_of

from ktrdr.config import DEFAULT_WORKER_PORT, EnvLoader, WorkerSettings, WorkerType
from ktrdr.config.loader import DeprecatedUse, SourceKind


def test_defaults(hostname: str) -> None:
    """With nothing set, a worker listens on 0.0.0.0:5003 and derives its id and URL."""
    worker = EnvLoader({}, env_file=None).load(WorkerSettings)
    assert worker == WorkerSettings(
        type=None,
        host="0.0.0.0",
        port=5003,
        id=f"worker-{hostname}-5003",
        public_url=f"http://{hostname}:5003",
        backend_url="http://localhost:8000",
        heartbeat_interval=datetime.timedelta(seconds=10),
        registration_timeout=datetime.timedelta(seconds=10),
        shutdown_timeout=datetime.timedelta(seconds=25),
        stale_after=3,
        removal_threshold=datetime.timedelta(seconds=300),
    )


def test_port_default_is_the_single_constant() -> None:
    """The port default is DEFAULT_WORKER_PORT (5003), directly and through the loader."""
    assert DEFAULT_WORKER_PORT == 5003
    assert WorkerSettings().port == DEFAULT_WORKER_PORT
    assert load("worker", {}).worker.port == DEFAULT_WORKER_PORT
    assert load("backend", {}).worker.port == DEFAULT_WORKER_PORT


OVERRIDES = [
    ("KTRDR_WORKER_TYPE", "backtest", "type", WorkerType.BACKTEST),
    ("KTRDR_WORKER_HOST", "127.0.0.1", "host", "127.0.0.1"),
    ("KTRDR_WORKER_PORT", "5010", "port", 5010),
    ("KTRDR_WORKER_ID", "gpu-box-1", "id", "gpu-box-1"),
    ("KTRDR_WORKER_PUBLIC_URL", "https://w1.example:443", "public_url", "https://w1.example:443"),
    ("KTRDR_WORKER_BACKEND_URL", "http://backend:8000", "backend_url", "http://backend:8000"),
    ("KTRDR_WORKER_HEARTBEAT_INTERVAL", "5s", "heartbeat_interval", datetime.timedelta(seconds=5)),
    (
        "KTRDR_WORKER_REGISTRATION_TIMEOUT",
        "1m",
        "registration_timeout",
        datetime.timedelta(minutes=1),
    ),
    ("KTRDR_WORKER_SHUTDOWN_TIMEOUT", "40", "shutdown_timeout", datetime.timedelta(seconds=40)),
    ("KTRDR_WORKER_STALE_AFTER", "5", "stale_after", 5),
    ("KTRDR_WORKER_REMOVAL_THRESHOLD", "1h", "removal_threshold", datetime.timedelta(hours=1)),
]


@pytest.mark.parametrize(("variable", "raw", "field", "expected"), OVERRIDES)
def test_each_variable_overrides_its_field(
    variable: str, raw: str, field: str, expected: object
) -> None:
    """Each KTRDR_WORKER_* variable sets its field and is recorded as its source."""
    config = load("worker", {variable: raw})
    assert getattr(config.worker, field) == expected
    assert config.report.sources[variable].kind is SourceKind.ENV
    assert config.report.sources[variable].variable == variable


DEPRECATED = [
    ("WORKER_TYPE", "training", "type", WorkerType.TRAINING),
    ("WORKER_PORT", "5010", "port", 5010),
    ("WORKER_ID", "old-id", "id", "old-id"),
    ("WORKER_PUBLIC_BASE_URL", "http://a:5003", "public_url", "http://a:5003"),
    ("WORKER_ENDPOINT_URL", "http://b:5003", "public_url", "http://b:5003"),
    ("KTRDR_WORKER_PUBLIC_BASE_URL", "http://c:5003", "public_url", "http://c:5003"),
    ("KTRDR_WORKER_ENDPOINT_URL", "http://d:5003", "public_url", "http://d:5003"),
    ("WORKER_REMOVAL_THRESHOLD", "600", "removal_threshold", datetime.timedelta(seconds=600)),
]


@pytest.mark.parametrize(("old", "raw", "field", "expected"), DEPRECATED)
def test_each_deprecated_name_still_works_and_is_reported(
    old: str, raw: str, field: str, expected: object
) -> None:
    """An old WORKER_* name sets the field; the report names the old and the new variable."""
    config = load("worker", {old: raw})
    assert getattr(config.worker, field) == expected
    new = "KTRDR_WORKER_" + field.upper()
    assert config.report.deprecations == (DeprecatedUse(old, new),)
    assert config.report.sources[new].variable == old
    assert config.report.sources[new].kind is SourceKind.DEPRECATED


def test_public_url_old_names_in_declared_precedence() -> None:
    """Several unprefixed old names: the first declared wins, the others are reported ignored."""
    config = load(
        "worker",
        {"WORKER_ENDPOINT_URL": "http://b:5003", "WORKER_PUBLIC_BASE_URL": "http://a:5003"},
    )
    assert config.worker.public_url == "http://a:5003"
    assert config.report.deprecations == (
        DeprecatedUse("WORKER_PUBLIC_BASE_URL", "KTRDR_WORKER_PUBLIC_URL"),
        DeprecatedUse(
            "WORKER_ENDPOINT_URL", "KTRDR_WORKER_PUBLIC_URL", "WORKER_PUBLIC_BASE_URL", True
        ),
    )


def test_derived_defaults_follow_type_and_port(hostname: str) -> None:
    """The default id is <type>-<hostname>-<port>, the default URL uses the same port."""
    config = load("worker", {"KTRDR_WORKER_PORT": "6001"}, worker_type=WorkerType.TRAINING)
    assert config.worker.id == f"training-{hostname}-6001"
    assert config.worker.public_url == f"http://{hostname}:6001"
    assert config.report.sources["KTRDR_WORKER_ID"].describe() == (
        "default (<type>-<hostname>-<port>)"
    )


def test_explicit_id_is_kept_when_the_entrypoint_sets_the_type() -> None:
    """An id set by the user is never rewritten by the entrypoint's type."""
    config = load("worker", {"KTRDR_WORKER_ID": "mine"}, worker_type=WorkerType.BACKTEST)
    assert (config.worker.id, config.worker.type) == ("mine", WorkerType.BACKTEST)


def test_entrypoint_type_is_recorded_as_its_source() -> None:
    """A type fixed by the entrypoint says so in the sources."""
    config = load("worker", {}, worker_type=WorkerType.BACKTEST)
    assert config.worker.type is WorkerType.BACKTEST
    assert config.report.sources["KTRDR_WORKER_TYPE"].kind is SourceKind.ENTRYPOINT


def test_type_repeating_the_entrypoint_is_accepted() -> None:
    """KTRDR_WORKER_TYPE may repeat the entrypoint's type."""
    config = load("worker", {"KTRDR_WORKER_TYPE": "Training"}, worker_type=WorkerType.TRAINING)
    assert config.worker.type is WorkerType.TRAINING


@pytest.mark.parametrize("variable", ["KTRDR_WORKER_TYPE", "WORKER_TYPE"])
def test_type_contradicting_the_entrypoint_is_an_error(variable: str) -> None:
    """A conflicting type is an error naming the variable the user set and the expected type."""
    problems = problems_of("worker", {variable: "backtest"}, worker_type=WorkerType.TRAINING)
    assert problems == [
        f"{variable}='backtest': expected training, which the entrypoint sets "
        "(repeat it or unset it)"
    ]


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("KTRDR_WORKER_PORT", "0", "expected a whole number between 1 and 65535"),
        ("KTRDR_WORKER_PORT", "65536", "expected a whole number between 1 and 65535"),
        ("KTRDR_WORKER_PORT", "abc", "expected a whole number"),
        ("KTRDR_WORKER_STALE_AFTER", "0", "expected a whole number between 1 and 1000"),
        ("KTRDR_WORKER_HEARTBEAT_INTERVAL", "0", "expected a duration between 0.05s and 3600s"),
        ("KTRDR_WORKER_HEARTBEAT_INTERVAL", "2h", "expected a duration between 0.05s and 3600s"),
        ("KTRDR_WORKER_SHUTDOWN_TIMEOUT", "0s", "expected a duration of at least 0.001s"),
        (
            "KTRDR_WORKER_HOST",
            "my host",
            "expected a host name or IP address, e.g. 0.0.0.0 or db.internal",
        ),
        (
            "KTRDR_WORKER_BACKEND_URL",
            "localhost:8000",
            "expected an http:// or https:// URL with a host, e.g. http://backend:8000",
        ),
    ],
)
def test_out_of_range_values_are_reported(variable: str, raw: str, expected: str) -> None:
    """Ranges and formats are checked and reported as VAR='value': expected ..."""
    assert problems_of("worker", {variable: raw}) == [f"{variable}={raw!r}: {expected}"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("my worker", "it contains ' '"),
        ("-worker", "it starts with '-'"),
        ("w/1", "it contains '/'"),
    ],
)
def test_worker_id_follows_the_id_rule_of_the_wire(raw: str, why: str) -> None:
    """KTRDR_WORKER_ID is checked against the backend's id rule at load, naming the variable."""
    expected = (
        "expected an id of 1 to 128 letters, digits, '.', '_', ':' or '-', "
        f"starting with a letter or digit ({why})"
    )
    assert problems_of("worker", {"KTRDR_WORKER_ID": raw}) == [
        f"KTRDR_WORKER_ID={raw!r}: {expected}"
    ]


def test_worker_id_accepts_what_the_wire_accepts() -> None:
    """Dots, colons, underscores and dashes after a first letter or digit are a valid id."""
    assert load("worker", {"KTRDR_WORKER_ID": "gpu_box-1.lan:5003"}).worker.id == (
        "gpu_box-1.lan:5003"
    )


def test_direct_construction_runs_the_same_checks() -> None:
    """A WorkerSettings built in code is checked by the same declared check."""
    with pytest.raises(ValueError, match=r"WorkerSettings.port=0: expected a whole number"):
        WorkerSettings(port=0)


def test_frozen() -> None:
    """Assigning to a field raises: settings never change after startup."""
    worker = WorkerSettings()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        worker.port = 1  # type: ignore[misc]


def test_prefixed_old_names_win_over_unprefixed_ones() -> None:
    """Precedence is by generation: a KTRDR_-prefixed old name beats an unprefixed one."""
    environ = {
        "WORKER_PUBLIC_BASE_URL": "http://old:5003",
        "KTRDR_WORKER_ENDPOINT_URL": "http://new:5003",
    }
    config = load("worker", environ)
    assert config.worker.public_url == "http://new:5003"
    assert config.report.deprecations[1] == DeprecatedUse(
        "WORKER_PUBLIC_BASE_URL", "KTRDR_WORKER_PUBLIC_URL", "KTRDR_WORKER_ENDPOINT_URL", True
    )


def test_an_old_public_url_naming_an_unset_port_is_refused() -> None:
    """WORKER_ENDPOINT_URL=...:5004 with no port set: refused, naming the port to set."""
    (problem,) = problems_of("worker", {"WORKER_ENDPOINT_URL": "http://10.0.0.2:5004"})
    assert problem.startswith(
        "WORKER_ENDPOINT_URL='http://10.0.0.2:5004': names port 5004, but KTRDR_WORKER_PORT "
        "is not set, so the worker would listen on 5003: set KTRDR_WORKER_PORT=5004"
    )
    fixed = load("worker", {"WORKER_ENDPOINT_URL": "http://10.0.0.2:5004", "WORKER_PORT": "5004"})
    assert fixed.worker.port == 5004


def test_a_current_public_url_behind_a_proxy_is_taken_as_meant() -> None:
    """KTRDR_WORKER_PUBLIC_URL on another port (a proxy, a port mapping) is not second-guessed."""
    config = load("worker", {"KTRDR_WORKER_PUBLIC_URL": "https://w1.example:443"})
    assert (config.worker.port, config.worker.public_url) == (5003, "https://w1.example:443")


def test_backtesting_is_read_as_backtest_under_every_name() -> None:
    """WORKER_TYPE=backtesting and KTRDR_WORKER_TYPE=backtesting both mean backtest, reported."""
    for name in ("WORKER_TYPE", "KTRDR_WORKER_TYPE"):
        config = load("worker", {name: "Backtesting"}, worker_type=WorkerType.BACKTEST)
        assert config.worker.type is WorkerType.BACKTEST
        assert config.report.deprecations == (
            DeprecatedUse(name, "KTRDR_WORKER_TYPE", value="Backtesting", read_as="backtest"),
        )
        source = config.report.sources["KTRDR_WORKER_TYPE"].describe()
        assert source.endswith("Backtesting read as backtest)")


def test_a_worker_type_no_mapping_carries_names_the_old_variable() -> None:
    """WORKER_TYPE=gpu: the old variable, the value and the accepted values of the new one."""
    assert problems_of("worker", {"WORKER_TYPE": "gpu"}) == [
        "WORKER_TYPE='gpu': expected one of: training, backtest"
    ]


@pytest.mark.parametrize("name", ["KTRDR_API_CLIENT_BASE_URL", "KTRDR_API_URL"])
@pytest.mark.parametrize("suffix", ["/api/v1", "/api/v1/", ""])
def test_old_backend_addresses_lose_their_api_root(name: str, suffix: str) -> None:
    """The old API-client URLs set the backend URL; a trailing /api/v1 is dropped."""
    config = load("worker", {name: f"http://backend:8000{suffix}"})
    assert config.worker.backend_url == "http://backend:8000"
    (use,) = config.report.deprecations
    assert (use.old, use.new) == (name, "KTRDR_WORKER_BACKEND_URL")
    assert use.read_as == ("http://backend:8000" if suffix else None)


def test_a_chosen_stop_grace_must_be_shorter_than_the_shutdown_timeout() -> None:
    """A stop grace set at or above the shutdown timeout is refused, naming both variables."""
    environ = {"KTRDR_WORKER_STOP_GRACE": "30s", "KTRDR_WORKER_SHUTDOWN_TIMEOUT": "30s"}
    assert problems_of("worker", environ) == [
        "KTRDR_WORKER_STOP_GRACE='30s': expected less than KTRDR_WORKER_SHUTDOWN_TIMEOUT "
        "(30s): a job that ignores SIGTERM must be killed before the worker gives up on it"
    ]
    ok = load("worker", {**environ, "KTRDR_WORKER_STOP_GRACE": "29s"})
    assert ok.worker.stop_grace == datetime.timedelta(seconds=29)


def test_the_default_stop_grace_fits_a_short_shutdown_timeout() -> None:
    """Only a chosen grace is held to the rule: a short shutdown timeout alone is accepted."""
    config = load("worker", {"KTRDR_WORKER_SHUTDOWN_TIMEOUT": "5s"})
    assert config.worker.shutdown_timeout == datetime.timedelta(seconds=5)
