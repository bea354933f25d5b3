"""Terminal charts of series: grouped by measure, drawn without colours off a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from ktrdr.cli.fleet_cmd import _print_charts
from ktrdr.cli.plot import chart_groups, render_charts

TRAINING = {
    "x": "epoch",
    "series": {
        "accuracy": [[1, 0.5], [2, 0.55], [3, 0.6]],
        "loss": [[1, 0.69], [2, 0.6], [3, 0.52]],
        "validation_accuracy": [[1, 0.48], [2, 0.5], [3, 0.51]],
        "validation_loss": [[1, 0.7], [2, 0.66], [3, 0.64]],
    },
}


def test_validation_series_share_the_chart_of_what_they_measure() -> None:
    """loss with validation_loss, accuracy with validation_accuracy, equity alone."""
    assert chart_groups(["validation_accuracy", "accuracy", "validation_loss", "loss"]) == {
        "loss": ["loss", "validation_loss"],
        "accuracy": ["accuracy", "validation_accuracy"],
    }
    assert chart_groups(["drawdown", "equity"]) == {"equity": ["equity"], "drawdown": ["drawdown"]}


def test_a_training_draws_two_charts_with_titles_legends_and_the_axis() -> None:
    """Two charts, each titled, with its series in the legend and 'epoch' under the x axis."""
    charts = render_charts(TRAINING, width=70, color=False)
    assert len(charts) == 2
    loss, accuracy = charts
    assert accuracy.splitlines()[0].strip() == "accuracy"
    assert "validation_accuracy" in accuracy
    assert "validation_loss" in loss
    assert loss.rstrip().splitlines()[-1].strip() == "epoch"
    assert all("\x1b[" not in chart for chart in charts)
    assert max(len(line) for line in loss.splitlines()) <= 70


def test_colours_are_kept_for_a_terminal() -> None:
    """On a terminal the lines are coloured (ANSI escapes present)."""
    (chart,) = render_charts({"x": "bar", "series": {"equity": [[1, 1.0], [2, 2.0]]}}, width=60)
    assert "\x1b[" in chart


def test_nothing_to_draw_gives_no_chart() -> None:
    """No series, empty series or points that are not number pairs: no chart, no error."""
    assert render_charts({"x": "epoch", "series": {}}, width=80) == []
    assert render_charts({"x": "epoch"}, width=80) == []
    bad = {"x": "bar", "series": {"equity": [["a", 1], [1], True, [True, 2.0]]}}
    assert render_charts(bad, width=80) == []


def test_ops_show_says_when_there_is_nothing_to_plot() -> None:
    """An operation without points prints one line instead of an empty chart."""
    console = Console(record=True, width=80, file=io.StringIO())
    _print_charts(console, {"x": "epoch", "series": {}})
    assert console.export_text() == "no series recorded yet\n"
