"""The exception hierarchy: one root, so callers can catch everything ktrdr raises."""

from __future__ import annotations

from collections.abc import Sequence


class KtrdrError(Exception):
    """Root of every error ktrdr raises on purpose."""


class ConfigurationError(KtrdrError, ValueError):
    """The configuration cannot be used; ``problems`` holds one line per problem.

    It is also a ``ValueError`` so generic callers that guard against bad values
    catch it too. The message is the full report, safe to print: secret values
    are masked before they reach it.
    """

    def __init__(
        self,
        problems: Sequence[str],
        *,
        header: str = "Invalid configuration",
        warnings: Sequence[str] = (),
    ) -> None:
        self.problems = tuple(problems)
        #: Non-fatal lines found on the way (deprecated names used), to print first.
        self.warnings = tuple(warnings)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{header} ({count} {noun}):", *(f"  - {p}" for p in self.problems)]
        message = "\n".join(lines)
        super().__init__(message)
