"""Fake workers in tests and benchmarks live on 127.0.0.1, so a stray dispatch stays here.

A backend calls every worker it knows at the endpoint the worker registered. A test
or benchmark that registers a fake worker at ``http://tr-1:5003`` or a LAN address
would, if anything ever dispatched to it for real, send an operation (and the worker
token) wherever that name resolves. So every endpoint written in ``tests/`` and
``benchmarks/`` is ``http://127.0.0.1`` (port 9, which nothing answers, when no one
should answer; a path prefix tells fake workers apart).

The scan reads the source (AST) for URLs given as a worker's endpoint: the
``endpoint_url`` of a registration (keyword, dict key, parameter default), the
``url`` of a registering helper (``_register(url=...)``), a worker's ``public_url``,
and ``KTRDR_WORKER_PUBLIC_URL`` or one of its deprecated names set in an
environment. The exceptions below are hostile or malformed inputs
that the tests assert are refused, and configuration tests whose URLs are values to
parse (nothing there registers or starts a worker).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import pytest

from ktrdr.config import WorkerSettings
from ktrdr.config.fields import declared

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "benchmarks")
LOOPBACK = "127.0.0.1"

#: Keyword, parameter and dict-key names whose value is a worker's endpoint.
ENDPOINT_NAMES = frozenset(
    {"endpoint_url", "public_url"}
    | {
        name
        for item in declared(WorkerSettings)
        if item.name == "public_url"
        for name in item.names
    }
)

#: A ``url`` keyword or parameter is an endpoint in functions whose name has this in it.
REGISTERING = "regist"

#: Files whose URLs are configuration values to parse, never a registered worker.
CONFIGURATION_ONLY = (
    "tests/unit/config/",
    "tests/unit/cli/test_config_cmd.py",
    "tests/unit/cli/test_config_migrate.py",
    "benchmarks/bench_config_load.py",
)

#: (file, URL) -> why it is allowed: inputs the test asserts are refused.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("tests/unit/api/test_workers_api.py", "ftp://x"): "not http(s): the test asserts 422",
}


@attrs.frozen
class Endpoint:
    """One URL written as a worker's endpoint."""

    path: str
    line: int
    url: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.url}"


def _literal_url(node: ast.expr) -> str | None:
    """The URL text of a string (or the literal start of an f-string), if it is one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            return None  # starts with a runtime value (a test server's own URL)
        text = first.value
    else:
        return None
    return text if "://" in text else None


def _callee(call: ast.Call) -> str:
    """The called function's own name (``register`` for ``backend.register(...)``)."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _names_for(function: str) -> frozenset[str]:
    """The keyword and parameter names that carry an endpoint in ``function``."""
    return ENDPOINT_NAMES | {"url"} if REGISTERING in function.lower() else ENDPOINT_NAMES


def _endpoint_values(tree: ast.AST) -> Iterator[ast.expr]:
    """Every expression given as a worker's endpoint in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            names = _names_for(_callee(node))
            yield from (k.value for k in node.keywords if k.arg in names)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in ENDPOINT_NAMES:
                    yield value
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.slice, ast.Constant)
                    and target.slice.value in ENDPOINT_NAMES
                ):
                    yield node.value
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            positional = arguments.posonlyargs + arguments.args
            pairs = [
                *zip(
                    positional[len(positional) - len(arguments.defaults) :],
                    arguments.defaults,
                    strict=True,
                ),
                *zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True),
            ]
            names = _names_for(node.name)
            yield from (d for a, d in pairs if d is not None and a.arg in names)


def endpoints_in(path: Path) -> list[Endpoint]:
    """The endpoint URLs written in one source file."""
    relative = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
    found = []
    for value in _endpoint_values(tree):
        url = _literal_url(value)
        if url is not None:
            found.append(Endpoint(relative, value.lineno, url))
    return found


def _on_loopback(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and parts.hostname == LOOPBACK
    except ValueError:
        return False


def _sources() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py"))


def test_every_fake_worker_endpoint_is_on_loopback() -> None:
    """No endpoint in tests/ or benchmarks/ names a host other than 127.0.0.1 (exceptions aside)."""
    outside = [
        str(endpoint)
        for path in _sources()
        if not path.relative_to(ROOT).as_posix().startswith(CONFIGURATION_ONLY)
        for endpoint in endpoints_in(path)
        if not _on_loopback(endpoint.url) and (endpoint.path, endpoint.url) not in EXCEPTIONS
    ]
    assert outside == []


def test_every_exception_is_still_in_its_file() -> None:
    """An exception whose URL left its file is removed from the list (no stale allowances)."""
    found = {(e.path, e.url) for path in _sources() for e in endpoints_in(path)}
    assert [key for key in EXCEPTIONS if key not in found] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('register(endpoint_url="http://tr-1:5003")', ["http://tr-1:5003"]),
        ('body = {"endpoint_url": "http://192.0.2.2:5004"}', ["http://192.0.2.2:5004"]),
        ('env["KTRDR_WORKER_PUBLIC_URL"] = f"http://host:{port}"', ["http://host:"]),
        ('spawn(WORKER_ENDPOINT_URL="http://w:1")', ["http://w:1"]),
        ('def make(endpoint_url="http://old:5003"): ...', ["http://old:5003"]),
        ('registry.register(_register(url="http://new:5003"))', ["http://new:5003"]),
        ('def _register(url: str = "http://host:5003"): ...', ["http://host:5003"]),
        ("evolve(settings, public_url=f'{server.url}/w')", []),
        ('client.get(url="http://backend:8000")', []),
    ],
    ids=[
        "keyword",
        "dict",
        "env-item",
        "deprecated-name",
        "default",
        "registering-helper",
        "registering-default",
        "runtime-base",
        "other",
    ],
)
def test_the_scan_finds_endpoints_in_every_form(source: str, expected: list[str]) -> None:
    """Keywords, dict keys, environment items, old names and defaults are all seen."""
    urls = [_literal_url(value) for value in _endpoint_values(ast.parse(source))]
    assert [url for url in urls if url is not None] == expected
