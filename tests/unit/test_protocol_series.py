"""Series on the wire: bounded, finite, and absent from messages that carry none."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from ktrdr.protocol import (
    MAX_SERIES_NAMES,
    MAX_SERIES_POINTS,
    SERIES_AXES,
    HeartbeatRequest,
    OperationReport,
    OperationSeries,
    OperationStatus,
    OperationType,
    WorkerStatus,
)


def test_messages_without_points_leave_the_field_out() -> None:
    """A heartbeat or report without series is byte-for-byte what a pre-series backend takes."""
    beat = HeartbeatRequest(status=WorkerStatus.IDLE)
    report = OperationReport(worker_id="w", attempt=1, status=OperationStatus.COMPLETED)
    assert "series" not in json.loads(beat.model_dump_json())
    assert "series" not in report.model_dump()


def test_points_travel_as_pairs_of_step_and_value() -> None:
    """Points are [x, y] pairs in JSON and come back as (int, float) tuples."""
    beat = HeartbeatRequest(status=WorkerStatus.BUSY, series={"loss": [(1, 0.5)]})
    data = json.loads(beat.model_dump_json())
    assert data["series"] == {"loss": [[1, 0.5]]}
    assert HeartbeatRequest.model_validate(data).series == {"loss": [(1, 0.5)]}


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ({"loss": [(1, math.nan)]}, "finite number"),
        ({"loss": [(-1, 0.5)]}, "greater than or equal to 0"),
        ({"Loss!": [(1, 0.5)]}, "should match pattern"),
        ({"loss": [(i, 0.5) for i in range(MAX_SERIES_POINTS + 1)]}, "at most 1000 items"),
        ({f"s{i}": [(1, 0.5)] for i in range(MAX_SERIES_NAMES + 1)}, "at most 8 items"),
    ],
    ids=["nan", "negative-step", "bad-name", "too-many-points", "too-many-series"],
)
def test_bad_series_are_refused_with_the_reason(series: object, expected: str) -> None:
    """NaN, negative steps, odd names and oversized series are refused, saying why."""
    with pytest.raises(ValidationError, match=expected):
        OperationReport.model_validate(
            {"worker_id": "w", "attempt": 1, "status": "completed", "series": series}
        )


def test_each_operation_type_names_its_axis() -> None:
    """Training series count epochs, backtest series count bars."""
    assert dict(SERIES_AXES) == {OperationType.TRAINING: "epoch", OperationType.BACKTEST: "bar"}
    assert OperationSeries(x="bar").model_dump() == {"x": "bar", "series": {}}
