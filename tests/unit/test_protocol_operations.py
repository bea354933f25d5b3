"""The operation models of ktrdr.protocol: parameters by type, the request and the view."""

from __future__ import annotations

import datetime
import posixpath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ktrdr.protocol import (
    BacktestParameters,
    CreateOperationRequest,
    OperationStatus,
    OperationType,
    OperationView,
    Progress,
    TrainingParameters,
    base_url_problem,
    data_path_problem,
    describe_validation_error,
    parse_parameters,
)


def errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {".".join(map(str, e["loc"])): e["type"] for e in exc.value.errors()}


def test_defaults_make_a_runnable_operation_of_each_type() -> None:
    """Empty parameters are valid for both types (zero-config demo runs)."""
    training = parse_parameters("training", {})
    backtest = parse_parameters(OperationType.BACKTEST, {})
    assert isinstance(training, TrainingParameters)
    assert (training.bars, training.epochs, training.symbol) == (2000, 50, "SYNTH")
    assert isinstance(backtest, BacktestParameters)
    assert (backtest.fast_window, backtest.slow_window) == (10, 30)


@pytest.mark.parametrize(
    ("parameters", "field", "kind"),
    [
        ({"bars": 99}, "bars", "greater_than_equal"),
        ({"bars": 1_000_001}, "bars", "less_than_equal"),
        ({"epochs": 10_001}, "epochs", "less_than_equal"),
        ({"learning_rate": 0}, "learning_rate", "greater_than"),
        ({"learning_rate": 11}, "learning_rate", "less_than_equal"),
        ({"learning_rate": float("nan")}, "learning_rate", "finite_number"),
        ({"hidden_units": 0}, "hidden_units", "greater_than_equal"),
        ({"symbol": "../etc"}, "symbol", "string_pattern_mismatch"),
        ({"seed": -1}, "seed", "greater_than_equal"),
        ({"csv_path": ""}, "csv_path", "string_too_short"),
        ({"epoch": 3}, "epoch", "extra_forbidden"),
    ],
)
def test_training_bounds(parameters: dict[str, Any], field: str, kind: str) -> None:
    """Each training bound is enforced and reported on its field."""
    with pytest.raises(ValidationError) as caught:
        parse_parameters("training", parameters)
    assert errors(caught) == {field: kind}


@pytest.mark.parametrize(
    ("parameters", "field", "kind"),
    [
        ({"commission": -0.001}, "commission", "greater_than_equal"),
        ({"slippage": 0.5}, "slippage", "less_than_equal"),
        ({"initial_capital": 0}, "initial_capital", "greater_than"),
        ({"fast_window": 0}, "fast_window", "greater_than_equal"),
        ({"bars_per_year": 0}, "bars_per_year", "greater_than_equal"),
    ],
)
def test_backtest_bounds(parameters: dict[str, Any], field: str, kind: str) -> None:
    """Each backtest bound is enforced and reported on its field."""
    with pytest.raises(ValidationError) as caught:
        parse_parameters("backtest", parameters)
    assert errors(caught) == {field: kind}


def test_fast_window_must_be_below_slow_window() -> None:
    """fast_window >= slow_window is refused with both values named."""
    with pytest.raises(ValidationError) as caught:
        parse_parameters("backtest", {"fast_window": 30, "slow_window": 30})
    assert describe_validation_error(caught.value) == (
        "fast_window (30) must be smaller than slow_window (30)"
    )


def test_slow_window_must_fit_in_the_bars() -> None:
    """A slow window as long as the data is refused."""
    with pytest.raises(ValidationError) as caught:
        parse_parameters("backtest", {"bars": 100, "slow_window": 100})
    assert describe_validation_error(caught.value) == (
        "slow_window (100) must be smaller than bars (100)"
    )


@given(fast=st.integers(1, 200), slow=st.integers(2, 200))
def test_window_rule_property(fast: int, slow: int) -> None:
    """Any window pair is accepted exactly when fast < slow (with enough bars)."""
    parameters = {"fast_window": fast, "slow_window": slow, "bars": 1000}
    if fast < slow:
        assert parse_parameters("backtest", parameters).slow_window == slow
    else:
        with pytest.raises(ValidationError):
            parse_parameters("backtest", parameters)


def test_unknown_type_lists_the_known_ones() -> None:
    """An unknown operation type is a ValueError naming the accepted types."""
    with pytest.raises(ValueError, match="unknown operation type 'mining'; expected one of"):
        parse_parameters("mining", {})


def test_describe_validation_error_joins_fields_and_messages() -> None:
    """Field errors read ``field: message`` joined by '; '."""
    with pytest.raises(ValidationError) as caught:
        parse_parameters("training", {"epochs": 0, "x": 1})
    assert describe_validation_error(caught.value) == (
        "epochs: Input should be greater than or equal to 1; x: Extra inputs are not permitted"
    )


def test_create_request_checks_parameters_by_type() -> None:
    """The request carries raw parameters; typed_parameters validates them for its type."""
    request = CreateOperationRequest.model_validate(
        {"type": "backtest", "parameters": {"commission": 0.002}}
    )
    typed = request.typed_parameters()
    assert isinstance(typed, BacktestParameters)
    assert typed.commission == 0.002
    bad = CreateOperationRequest(type=OperationType.TRAINING, parameters={"commission": 0.002})
    with pytest.raises(ValidationError):
        bad.typed_parameters()


def test_create_request_refuses_unknown_type() -> None:
    """The request's type must be a known operation type."""
    with pytest.raises(ValidationError) as caught:
        CreateOperationRequest.model_validate({"type": "mining"})
    assert errors(caught) == {"type": "enum"}


def test_operation_view_round_trips_through_json() -> None:
    """The view serialises to JSON and back unchanged (what the HTTP API returns)."""
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    view = OperationView(
        id="abc",
        type=OperationType.TRAINING,
        status=OperationStatus.RUNNING,
        parameters={"epochs": 5},
        progress=Progress(percent=20, message="epoch 1", details={"epoch": 1}),
        worker_id="w-1",
        created_at=now,
        started_at=now,
        last_reported_at=now,
    )
    assert OperationView.model_validate_json(view.model_dump_json()) == view


@pytest.mark.parametrize("kind", ["training", "backtest"])
@pytest.mark.parametrize(
    ("csv_path", "words"),
    [
        ("/etc/shadow", "not absolute"),
        ("../../etc/shadow", "'..' leaves it"),
        ("bars/../../x.csv", "'..' leaves it"),
        ("bars\x00.csv", "NUL byte"),
    ],
    ids=["absolute", "dot-dot", "nested-dot-dot", "nul"],
)
def test_csv_paths_outside_the_data_directory_are_refused(
    kind: str, csv_path: str, words: str
) -> None:
    """Both operation types refuse an absolute, climbing or NUL csv_path, naming the field."""
    with pytest.raises(ValidationError) as raised:
        parse_parameters(kind, {"csv_path": csv_path})
    assert errors(raised) == {"csv_path": "value_error"}
    assert words in describe_validation_error(raised.value)


@pytest.mark.parametrize("csv_path", ["bars.csv", "eurusd/2024.csv", "a/../b.csv", "./c.csv"])
def test_relative_csv_paths_inside_the_directory_are_accepted(csv_path: str) -> None:
    """Relative paths that stay inside (even through ``..``) are kept as written."""
    assert parse_parameters("backtest", {"csv_path": csv_path}).csv_path == csv_path


@given(st.text(min_size=1, max_size=30))
def test_a_csv_path_the_text_check_accepts_stays_inside(csv_path: str) -> None:
    """Whatever the text, an accepted path is relative and never climbs out when joined."""
    if data_path_problem(csv_path) is None:
        joined = posixpath.normpath(posixpath.join("/data", csv_path))
        assert joined == "/data" or joined.startswith("/data/")


@pytest.mark.parametrize(
    "url",
    ["http://a:5003", "https://worker.example:443/ktrdr/", "http://[::1]:5003/prefix"],
)
def test_base_urls_with_an_optional_path_prefix_are_accepted(url: str) -> None:
    """Scheme, host, optional port and optional path prefix make a base URL."""
    assert base_url_problem(url) is None


@given(st.text(max_size=40))
def test_an_accepted_base_url_has_no_query_fragment_or_user_info(suffix: str) -> None:
    """Whatever follows the host, an accepted URL carries no ?, # or @ anywhere."""
    url = "http://worker:5003" + suffix
    if base_url_problem(url) is None:
        assert not {"?", "#", "@", "\\", " "} & set(url)
