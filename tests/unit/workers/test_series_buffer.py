"""The worker's record of an operation's series: what heartbeats and the report carry."""

from __future__ import annotations

from ktrdr.job_messages import SeriesUpdate
from ktrdr.workers.series_buffer import SeriesBuffer


def update(**points: tuple[tuple[int, float], ...]) -> SeriesUpdate:
    """A job's update with ``points`` by series name."""
    return SeriesUpdate(points=points)


def test_acknowledged_points_leave_the_unsent_ones_but_stay_in_the_whole_record() -> None:
    """Heartbeats send each point until acknowledged; the report sends them all, sorted."""
    buffer = SeriesBuffer()
    assert (buffer.unsent(), buffer.everything()) == (None, None)
    buffer.add(update(loss=((2, 0.4), (1, 0.5))))
    sent = buffer.unsent()
    assert sent == {"loss": [(1, 0.5), (2, 0.4)]}
    buffer.add(update(loss=((3, 0.3),), accuracy=((3, 0.6),)))
    buffer.acknowledge(sent)
    assert buffer.unsent() == {"loss": [(3, 0.3)], "accuracy": [(3, 0.6)]}
    assert buffer.everything() == {"loss": [(1, 0.5), (2, 0.4), (3, 0.3)], "accuracy": [(3, 0.6)]}


def test_a_point_that_changed_after_it_was_sent_is_sent_again() -> None:
    """A resumed job re-sending a step with another value: the new value is still unsent."""
    buffer = SeriesBuffer()
    buffer.add(update(equity=((10, 100.0),)))
    sent = buffer.unsent()
    assert sent is not None
    buffer.add(update(equity=((10, 101.0),)))
    buffer.acknowledge(sent)
    assert buffer.unsent() == {"equity": [(10, 101.0)]}
    assert buffer.everything() == {"equity": [(10, 101.0)]}
