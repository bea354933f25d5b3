"""docs/migration.md stays complete as deprecated names are added."""

from pathlib import Path

from ktrdr.config import deprecated_names
from ktrdr.config.deprecation import value_mappings

MIGRATION = Path(__file__).resolve().parents[3] / "docs" / "migration.md"


def test_every_deprecated_name_has_a_row_with_its_replacement() -> None:
    """Each old name appears in the table next to the variable that replaces it."""
    text = MIGRATION.read_text()
    missing = [
        old for old, new in deprecated_names().items() if f"| `{old}` | `{new}` |" not in text
    ]
    assert missing == []


def test_value_mappings_inference_labels_and_migrate_are_documented() -> None:
    """Every old name with a value mapping, and each migration rule, has its place."""
    text = MIGRATION.read_text()
    for names, _mapping, new in value_mappings():
        assert all(name in text for name in names.split(", ")), names
        assert f"`{new}" in text
    for heading in (
        "## Migrate a file in one step",
        "## Old values",
        "## Labels never decide strictness",
        "## Inferred PostgreSQL",
        "## Nothing silently without effect",
        "## Other ktrdr components' variables",
    ):
        assert heading in text
