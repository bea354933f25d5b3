"""``GET /api/v1/workers``: the full list or one page, filtered, without stalling heartbeats.

The answer is always a JSON array of worker views, ordered by worker id (what it
always was). ``type`` and ``status`` filter it; ``limit`` makes it one page whose
``Link: <...>; rel="next"`` header carries the next page's URL (with an opaque
``cursor``, :mod:`ktrdr.api.cursors`); without ``limit`` it is every matching
worker. ``X-Total-Count`` says how many match the filters.

Heartbeats share the event loop with this route, so the route does little there:
choosing the records is a walk of the registry's id order that stops when the page
is full, and turning them into JSON happens in a thread, from each record's cached
JSON (records are immutable, and a worker's JSON changes only when its record or
its drift flag does). Every listing spends its item count from a shared
:class:`~ktrdr.api.list_budget.ListBudget`; past it, a 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from ktrdr.api.cursors import CursorCodec
from ktrdr.api.list_budget import ListBudget
from ktrdr.api.registry import WorkerRecord, WorkerRegistry
from ktrdr.errors import InvalidCursor, ListingTooFrequent
from ktrdr.protocol import OperationType, WorkerStatus
from ktrdr.web import ApiError

__all__ = ["MAX_WORKERS_PAGE", "WORKERS_CURSOR_KIND", "WorkerListing", "cursor_error", "too_often"]

#: Largest ``limit`` of one page of workers.
MAX_WORKERS_PAGE = 1000
#: The cursor kind of worker pages (a cursor of another listing is refused).
WORKERS_CURSOR_KIND = "workers"

_Fragment = tuple[WorkerRecord, bool, str]


def cursor_error(exc: InvalidCursor) -> ApiError:
    """The 422 for a cursor that cannot be used, located at ``query.cursor``."""
    detail = [{"loc": ["query", "cursor"], "msg": str(exc), "type": "invalid_cursor"}]
    return ApiError(422, "invalid_request", detail)


def too_often(exc: ListingTooFrequent) -> ApiError:
    """The 429 for a listing past its budget, with ``Retry-After``."""
    headers = {"Retry-After": str(exc.retry_after_s)}
    return ApiError(429, "too_many_requests", str(exc), headers=headers)


class WorkerListing:
    """Builds the answers of ``GET /api/v1/workers`` over one registry."""

    def __init__(self, *, registry: WorkerRegistry, codec: CursorCodec, budget: ListBudget) -> None:
        self._registry = registry
        self._codec = codec
        self._budget = budget
        #: Worker id → (the record, its drift flag, its JSON), reused while both hold.
        self._fragments: dict[str, _Fragment] = {}

    async def respond(
        self,
        request: Request,
        *,
        worker_type: OperationType | None,
        status: WorkerStatus | None,
        limit: int | None,
        cursor: str | None,
    ) -> Response:
        """The list (or page) for these query parameters; raises 422/429 ``ApiError``."""
        filters = {
            "type": None if worker_type is None else worker_type.value,
            "status": None if status is None else status.value,
        }
        after = None
        if cursor is not None:
            try:
                (after,) = self._codec.decode(cursor, WORKERS_CURSOR_KIND, filters)
            except InvalidCursor as exc:
                raise cursor_error(exc) from None
            except ValueError:  # a signed position of another shape: not from this listing
                raise cursor_error(InvalidCursor("cursor belongs to another listing")) from None
        try:
            self._budget.check()
        except ListingTooFrequent as exc:
            raise too_often(exc) from None
        registry = self._registry
        records, more = registry.page(
            after=after, limit=limit, worker_type=worker_type, status=status
        )
        self._budget.spend(len(records))
        headers = {"X-Total-Count": str(registry.count(worker_type=worker_type, status=status))}
        if more:
            next_cursor = self._codec.encode(WORKERS_CURSOR_KIND, filters, [records[-1].worker_id])
            next_url = request.url.include_query_params(cursor=next_cursor)
            headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'
        drifting = registry.drifting_types()
        body = await asyncio.to_thread(self._encode, records, drifting, len(registry))
        return Response(body, media_type="application/json", headers=headers)

    def _encode(
        self,
        records: Sequence[WorkerRecord],
        drifting: frozenset[OperationType],
        fleet: int,
    ) -> bytes:
        """In a thread: the JSON array, from cached fragments where they still hold."""
        fragments = self._fragments
        if len(fragments) > 2 * fleet + MAX_WORKERS_PAGE:
            fragments.clear()  # entries of workers that left
        parts: list[str] = []
        for record in records:
            drift = record.status is not WorkerStatus.UNAVAILABLE and record.worker_type in drifting
            cached = fragments.get(record.worker_id)
            if cached is not None and cached[0] is record and cached[1] is drift:
                parts.append(cached[2])
                continue
            text = record.view(drift=drift).model_dump_json()
            fragments[record.worker_id] = (record, drift, text)
            parts.append(text)
        return ("[" + ",".join(parts) + "]").encode()
