"""``GET /api/v1/operations``: pages by cursor at any depth, bounded offsets and counts.

A page is newest first. Its ``next_cursor`` (null on the last page) continues the
listing from its last item by key, so page 5,000 costs what page 1 costs, and rows
inserted or deleted meanwhile never make an operation appear twice or be skipped
(new ones are newer than any cursor: they appear on a new first page). A cursor is
opaque and signed (:mod:`ktrdr.api.cursors`): malformed, altered, expired (after
:data:`~ktrdr.api.cursors.CURSOR_TTL`), issued by another backend run, or used with
other filters, it is a 422 naming ``cursor``. ``offset`` still works for old
clients, up to :data:`MAX_OFFSET` (a deeper offset would scan that many rows), and
cannot be combined with ``cursor``. ``limit`` above
:data:`~ktrdr.protocol.MAX_PAGE_ITEMS` is a 422. ``total`` is counted up to
:data:`~ktrdr.protocol.MAX_COUNTED` and null above.

The store read and the serialisation run in a thread; each page spends its item
count from the operations' :class:`~ktrdr.api.list_budget.ListBudget` (429 with
``Retry-After`` past it).
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from starlette.responses import Response

from ktrdr.api.cursors import CursorCodec
from ktrdr.api.list_budget import ListBudget
from ktrdr.api.operations import OperationsService
from ktrdr.api.store import ListPosition
from ktrdr.api.workers_listing import cursor_error, too_often
from ktrdr.errors import InvalidCursor, ListingTooFrequent
from ktrdr.protocol import MAX_OFFSET, OperationStatus, OperationType
from ktrdr.web import ApiError

__all__ = ["MAX_OFFSET", "OPERATIONS_CURSOR_KIND", "OperationListing"]

#: The cursor kind of operations pages (a cursor of another listing is refused).
OPERATIONS_CURSOR_KIND = "operations"
#: A listing page without the operations' results (``?include=result`` keeps them).
_WITHOUT_RESULTS: dict[str, Any] = {"items": {"__all__": {"result"}}}


class OperationListing:
    """Builds the answers of ``GET /api/v1/operations`` over the operations service."""

    def __init__(
        self, *, service: OperationsService, codec: CursorCodec, budget: ListBudget
    ) -> None:
        self._service = service
        self._codec = codec
        self._budget = budget

    async def respond(
        self,
        *,
        status: OperationStatus | None,
        operation_type: OperationType | None,
        limit: int,
        offset: int,
        cursor: str | None,
        include_result: bool,
    ) -> Response:
        """The page for these query parameters; raises 422/429 ``ApiError``."""
        filters = {
            "status": None if status is None else status.value,
            "type": None if operation_type is None else operation_type.value,
        }
        after = None
        if cursor is not None:
            if offset:
                message = "cursor and offset cannot be combined; pass only the cursor"
                detail = [{"loc": ["query", "offset"], "msg": message, "type": "conflict"}]
                raise ApiError(422, "invalid_request", detail)
            after = self._position(cursor, filters)
        try:
            self._budget.check()
        except ListingTooFrequent as exc:
            raise too_often(exc) from None

        def cursor_for(position: ListPosition) -> str:
            place = [position.created_at.isoformat(), position.id]
            return self._codec.encode(OPERATIONS_CURSOR_KIND, filters, place)

        def page() -> bytes:
            listed = self._service.list(
                status=status,
                operation_type=operation_type,
                limit=limit,
                offset=offset,
                after=after,
                include_result=include_result,
                cursor_for=cursor_for,
            )
            self._budget.spend(len(listed.items))
            exclude = None if include_result else _WITHOUT_RESULTS
            return listed.model_dump_json(exclude=exclude).encode()

        return Response(await asyncio.to_thread(page), media_type="application/json")

    def _position(self, cursor: str, filters: dict[str, str | None]) -> ListPosition:
        try:
            created, operation_id = self._codec.decode(cursor, OPERATIONS_CURSOR_KIND, filters)
            created_at = datetime.datetime.fromisoformat(created)
        except InvalidCursor as exc:
            raise cursor_error(exc) from None
        except ValueError:  # signed by us but not a position: another version's cursor
            stale = InvalidCursor("cursor is from another version of the backend")
            raise cursor_error(stale) from None
        return ListPosition(created_at=created_at, id=operation_id)
