"""docs/migration.md stays complete as deprecated names are added."""

from pathlib import Path

from ktrdr.config import deprecated_names

MIGRATION = Path(__file__).resolve().parents[3] / "docs" / "migration.md"


def test_every_deprecated_name_has_a_row_with_its_replacement() -> None:
    """Each old name appears in the table next to the variable that replaces it."""
    text = MIGRATION.read_text()
    missing = [
        old for old, new in deprecated_names().items() if f"| `{old}` | `{new}` |" not in text
    ]
    assert missing == []
