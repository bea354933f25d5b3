"""``ktrdr ops logs``: how one worker-side log record is printed."""

from __future__ import annotations

from ktrdr.cli.fleet_cmd import log_line


def test_a_record_prints_as_time_level_logger_attempt_message() -> None:
    """The text a person reads, the traceback on the lines after it."""
    line = {
        "time": "2026-01-01T00:00:00.000+00:00",
        "level": "ERROR",
        "logger": "ktrdr.jobs.step_loop",
        "attempt": 2,
        "message": "training crashed",
        "exception": "Traceback (most recent call last):\n  boom",
    }
    assert log_line(line) == (
        "2026-01-01T00:00:00.000+00:00 ERROR    ktrdr.jobs.step_loop [attempt 2]: "
        "training crashed\nTraceback (most recent call last):\n  boom"
    )


def test_control_characters_never_reach_the_terminal() -> None:
    """An escape sequence in a logged message (a hostile CSV header) is printed inert."""
    printed = log_line({"message": "bad column \x1b[2J\x1b]0;pwned\x07 here", "level": "INFO"})
    assert "\x1b" not in printed
    assert "\x07" not in printed
    assert printed.endswith("bad column ?[2J?]0;pwned? here")
    assert "[attempt" not in printed
