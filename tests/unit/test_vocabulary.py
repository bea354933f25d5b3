"""The shared vocabulary: one definition of types, statuses and the id rule for everyone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import ktrdr.config
import ktrdr.protocol
from ktrdr import vocabulary
from ktrdr.vocabulary import (
    FINISHED_STATUSES,
    ID_PATTERN,
    ID_RULE,
    LIVE_STATUSES,
    OperationStatus,
    OperationType,
    id_problem,
)

PACKAGE = Path(ktrdr.__file__).parent


def test_config_and_wire_share_one_type_enum() -> None:
    """ktrdr.config.WorkerType and the wire's OperationType are the same object."""
    assert ktrdr.config.WorkerType is ktrdr.protocol.OperationType is OperationType
    assert [t.value for t in OperationType] == ["training", "backtest"]


def test_protocol_reexports_the_vocabulary_objects() -> None:
    """The wire's statuses and id pattern are the vocabulary's, not copies."""
    assert ktrdr.protocol.OperationStatus is OperationStatus
    assert ktrdr.protocol.WorkerStatus is vocabulary.WorkerStatus
    assert ktrdr.protocol.FINISHED_STATUSES is FINISHED_STATUSES
    assert ktrdr.protocol.ID_PATTERN is ID_PATTERN


def test_finished_and_live_statuses_split_the_lifecycle() -> None:
    """Completed, failed, cancelled are final and pending, running live, in lifecycle order."""
    assert [s.value for s in FINISHED_STATUSES] == ["completed", "failed", "cancelled"]
    assert [s.value for s in LIVE_STATUSES] == ["pending", "running"]
    assert list(OperationStatus) == [*LIVE_STATUSES, *FINISHED_STATUSES]
    assert [s for s in OperationStatus if s.finished] == list(FINISHED_STATUSES)


def test_vocabulary_imports_nothing_from_ktrdr() -> None:
    """The vocabulary sits below config and protocol, so it may import neither."""
    tree = ast.parse((PACKAGE / "vocabulary.py").read_text(encoding="utf-8"))
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert sorted(m for m in modules if m.startswith("ktrdr")) == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "it is empty"),
        ("my worker", "it contains ' '"),
        (".hidden", "it starts with '.'"),
        ("é-worker", "it starts with 'é'"),
        ("../etc", "it starts with '.'"),
        ("a/b", "it contains '/'"),
        ("ok\n", "it contains '\\n'"),
        ("x" * 129, "it has 129 characters"),
    ],
)
def test_id_problem_says_what_is_wrong(value: str, why: str) -> None:
    """A refused id gets the rule and the first thing wrong with it, never the whole value."""
    assert id_problem(value) == f"expected {ID_RULE} ({why})"


@pytest.mark.parametrize("value", ["w", "training-host-5003", "op:2024.01_a", "9" * 128])
def test_id_problem_accepts_valid_ids(value: str) -> None:
    """Ids of letters, digits and . _ : - starting with a letter or digit pass."""
    assert id_problem(value) is None


@given(st.text(max_size=140))
def test_id_problem_agrees_with_the_wire(value: str) -> None:
    """id_problem refuses exactly what the wire models refuse (the pattern pydantic applies)."""
    try:
        ktrdr.protocol.HeartbeatRequest(
            status=vocabulary.WorkerStatus.IDLE, current_operation_id=value, attempt=1
        )
        wire_accepts = True
    except ValidationError:
        wire_accepts = False
    assert (id_problem(value) is None) is wire_accepts
    assert (re.fullmatch(ID_PATTERN, value) is not None) is wire_accepts
