"""The one exception tree: unique names, one home, the drawn tree and the HTTP mapping."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import subprocess
import sys
from collections import defaultdict

import pytest

import ktrdr
from ktrdr import errors
from ktrdr.errors import (
    HTTP_STATUSES,
    ConfigurationError,
    HttpStatus,
    KtrdrError,
    WorkerBusy,
    http_status,
)

#: Error classes still defined outside ktrdr.errors while their modules are rewritten
#: (issue 8, items 1-2; issue 11), with the module holding the old definition. Their
#: final class is already in ktrdr.errors; once a module imports it from there, delete
#: its entries here. Nothing new may join this list.
MOVING = {
    ("MigrationError", "ktrdr.config.migrate_files"),
}


def _import_every_module() -> None:
    for info in pkgutil.walk_packages(ktrdr.__path__, "ktrdr."):
        if not info.name.endswith("__main__"):  # those run the command on import
            importlib.import_module(info.name)


def _subclasses(root: type[BaseException]) -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    pending = [root]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def _ktrdr_exceptions() -> set[type[BaseException]]:
    _import_every_module()
    return {c for c in _subclasses(BaseException) if c.__module__.startswith("ktrdr")}


def test_no_two_exception_classes_share_a_name() -> None:
    """Every exception class under ktrdr/ has its own name (moving ones excepted, listed)."""
    by_name: dict[str, set[str]] = defaultdict(set)
    for cls in _ktrdr_exceptions():
        by_name[cls.__name__].add(cls.__module__)
    shared = {
        name: sorted(modules)
        for name, modules in by_name.items()
        if len(modules - {module for n, module in MOVING if n == name}) > 1
    }
    assert shared == {}


def test_every_ktrdr_error_is_defined_in_ktrdr_errors() -> None:
    """KtrdrError subclasses live in ktrdr.errors, apart from the few still being moved."""
    _import_every_module()
    elsewhere = {
        (cls.__name__, cls.__module__)
        for cls in _subclasses(KtrdrError)
        if cls.__module__.startswith("ktrdr") and cls.__module__ != "ktrdr.errors"
    }
    assert elsewhere - MOVING == set()


def test_every_moving_error_has_its_final_class_in_ktrdr_errors() -> None:
    """Each error still being moved already exists in ktrdr.errors, ready to import."""
    for name, _ in MOVING:
        assert issubclass(getattr(errors, name), KtrdrError), name


def _drawn_tree() -> list[tuple[int, str, tuple[str, ...]]]:
    """(depth, class, extra bases) for each line of the tree in the module docstring."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in block.splitlines():
        match = re.match(r"^ {4}((?:[│ ]   )*)(?:[├└]── )?(\w+)(?: \(([\w, ]+)\))?", line)
        assert match, line
        depth = len(match[1]) // 4 + (0 if match[2] == "KtrdrError" else 1)
        extras = tuple(b.strip() for b in match[3].split(",")) if match[3] else ()
        rows.append((depth, match[2], extras))
    return rows


def test_the_docstring_draws_every_class_under_its_real_parent() -> None:
    """The drawn tree lists every class of ktrdr.errors once, each under its actual base."""
    rows = _drawn_tree()
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, KtrdrError)
    }
    assert sorted(name for _, name, _ in rows) == sorted(defined)
    parents: dict[int, str] = {}
    for depth, name, extras in rows:
        parents[depth] = name
        cls = getattr(errors, name)
        if depth == 0:
            continue
        assert cls.__bases__[0] is getattr(errors, parents[depth - 1]), name
        assert tuple(b.__name__ for b in cls.__bases__[1:]) == extras, name


def test_http_statuses_are_the_one_pinned_mapping() -> None:
    """Each domain error a client can cause has one status and code, and only these do."""
    table = {cls.__name__: tuple(answer) for cls, answer in HTTP_STATUSES.items()}
    assert table == {
        "UnknownWorker": (404, "unknown_worker"),
        "WorkerIdConflict": (409, "worker_id_conflict"),
        "StaleAttempt": (409, "stale_attempt"),
        "OperationNotFound": (404, "unknown_operation"),
        "UnknownOperation": (404, "unknown_operation"),
        "InvalidTransition": (409, "invalid_transition"),
        "WorkerBusy": (409, "busy"),
        "WrongOperationType": (422, "wrong_operation_type"),
        "TooManyOperations": (429, "too_many_operations"),
        "InvalidCursor": (422, "invalid_request"),
        "ListingTooFrequent": (429, "too_many_requests"),
        "WorkerStopping": (503, "stopping"),
    }


def test_http_status_follows_the_class_hierarchy() -> None:
    """A subclass inherits its parent's answer; an unmapped error has none (a bug: 500)."""

    class VeryBusy(WorkerBusy):
        pass

    assert http_status(VeryBusy("x")) == HttpStatus(409, "busy")
    assert http_status(ConfigurationError(["x"])) is None
    assert http_status(ValueError("x")) is None


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (errors.UnknownWorker("w-1"), "no worker with id 'w-1' is registered"),
        (
            errors.TooManyOperations(live=3, limit=3, variable="KTRDR_OPS_MAX_OPERATIONS"),
            "cannot create an operation: 3 operations are already pending or running and "
            "KTRDR_OPS_MAX_OPERATIONS=3; wait for some to finish, cancel some, or raise "
            "KTRDR_OPS_MAX_OPERATIONS",
        ),
        (
            errors.BackendRejected("heartbeat: HTTP 401", status_code=401),
            "heartbeat: HTTP 401",
        ),
    ],
)
def test_messages_are_sentences_for_people(error: KtrdrError, message: str) -> None:
    """Messages say what happened and, where there is one, the variable to change."""
    assert str(error) == message


def test_importing_ktrdr_errors_imports_nothing_else_from_ktrdr() -> None:
    """ktrdr.errors sits at the bottom: config and the vocabulary may import it."""
    code = (
        "import json, sys, ktrdr.errors; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ktrdr'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == ["ktrdr", "ktrdr.errors"]


@pytest.mark.parametrize(
    "error",
    [
        errors.UnknownWorker("w" * 100_000),
        errors.OperationNotFound("o" * 100_000),
        errors.DuplicateOperation("d" * 100_000),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_id_a_client_sent_is_quoted_cut_to_128_characters(error: KtrdrError) -> None:
    """A 100 000-character id is echoed as its first 128 characters and its length."""
    message = str(error)
    assert len(message) < 128 + 100
    assert "... (100000 characters)" in message
    assert errors.shown_id("x" * 129) == repr("x" * 128) + "... (129 characters)"
    assert errors.shown_id("x" * 128) == repr("x" * 128)
