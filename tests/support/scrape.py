"""A /metrics answer read in tests: samples by name and labels (prometheus-client parser)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The samples of one exposition (Prometheus text format)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    @property
    def names(self) -> set[str]:
        """Every sample name (``_total``, ``_count``, ``_bucket`` ... included)."""
        return {name for name, _ in self.samples}

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The sample ``name{labels}``; KeyError naming it when absent."""
        key = (name, frozenset((labels or {}).items()))
        if key not in self.samples:
            message = f"no sample {name}{dict(labels or {})} in the scrape"
            raise KeyError(message)
        return self.samples[key]

    def total(self, name: str, **labels: str) -> float:
        """Sum of ``name`` over every sample whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, have), value in self.samples.items()
            if sample == name and wanted <= have
        )


__all__ = ["Scrape"]
