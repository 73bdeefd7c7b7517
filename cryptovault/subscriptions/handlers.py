"""Strawberry's two WebSocket protocol handlers with grouped subscriptions beneath.

Everything a client sees of the protocols stays Strawberry's (connection_init/ack,
ping/pong, subscribe/start, complete/stop, errors, close codes, limits); only how a
subscription operation produces its events changes: instead of running its own
stream, it joins a group (groups.py). Queries and mutations over a socket, and every
operation in "naive" mode (`view.subscription_groups` is None), run exactly as
Strawberry runs them — except that the legacy protocol serves queries and mutations
too (as Apollo's subscriptions-transport-ws does; Strawberry's handler refuses them).

Every frame of a connection goes through its Outbox (ordered, never blocking the
fan-out; slow readers are closed with 1013: outbox.py).

Subclasses that add their own behaviour (limits, keep-alive) put these mixins where
they would put Strawberry's base handler:
    class TransportWSHandler(MyLimits, GroupedTransportWSHandler): ...
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from cryptovault.subscriptions.groups import (
    LEGACY_WS,
    NOT_A_SUBSCRIPTION,
    TRANSPORT_WS,
    Failed,
    Member,
    Prepared,
    Rejected,
    SubscriptionGroups,
)
from cryptovault.subscriptions.outbox import Outbox


class _Grouped:
    """What both protocol handlers share: the groups and the connection's outbox."""

    view: Any
    websocket: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        groups: SubscriptionGroups | None = getattr(self.view, "subscription_groups", None)
        self.groups = groups
        self.outbox: Outbox | None = None
        if groups is not None:
            self.outbox = Outbox(
                self.websocket.ws.send_text, self.websocket.close, groups.send_queue
            )
        # Operation tasks relaying a shared (public) stream: a revoked credential
        # does not end them early (websocket_trust.py).
        self._shared_tasks: set[asyncio.Task[Any]] = set()

    async def send_message(self, message: Any) -> None:
        if self.outbox is None:
            await super().send_message(message)  # type: ignore[misc]
            return
        self.outbox.push(orjson.dumps(message).decode())

    def _runs_shared_stream(self, task: asyncio.Task[Any]) -> bool:
        return task in self._shared_tasks

    async def _close_after_sent(self, code: int, reason: str) -> None:
        if self.outbox is None:
            await super()._close_after_sent(code, reason)  # type: ignore[misc]
            return
        self.outbox.close_after_sent(code, reason)

    async def _relay(self, groups: SubscriptionGroups, member: Member, shared: bool) -> None:
        """Until the member's group ends (or the operation is stopped)."""
        task = asyncio.current_task()
        if shared and task is not None:
            self._shared_tasks.add(task)
        try:
            await member.wait()
        finally:
            groups.leave(member)
            if task is not None:
                self._shared_tasks.discard(task)


class GroupedTransportWSHandler(_Grouped, BaseGraphQLTransportWSHandler[Any, Any]):
    """graphql-transport-ws."""

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        groups, outbox = self.groups, self.outbox
        if groups is None or outbox is None:
            await super().run_operation(operation)
            return
        try:
            outcome = await groups.prepare(
                operation.query,
                operation.variables,
                operation.operation_name,
                self.context,
                outbox,
            )
            if outcome is NOT_A_SUBSCRIPTION:
                await super().run_operation(operation)
                return
            if isinstance(outcome, Rejected):
                await self._handle_pre_execution_error(operation, outcome.result)  # type: ignore[arg-type]
                return
            if isinstance(outcome, Failed):
                await operation.send_next(outcome.result)
            elif isinstance(outcome, Prepared):
                member = groups.join(outcome, outbox, operation.id, TRANSPORT_WS)
                await self._relay(groups, member, outcome.policy.shared)
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
        except _OperationStreamClosed:
            return
        except Exception as error:
            # As Strawberry: log, end the operation for the client, re-raise.
            await self.handle_task_exception(error)
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise


class GroupedLegacyWSHandler(_Grouped, BaseGraphQLWSHandler[Any, Any]):
    """graphql-ws (the legacy subscriptions-transport-ws protocol)."""

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        groups, outbox = self.groups, self.outbox
        try:
            if groups is None or outbox is None:
                await self._stream_results(operation_id, query, operation_name, variables)
                return
            outcome = await groups.prepare(query, variables, operation_name, self.context, outbox)
            if outcome is NOT_A_SUBSCRIPTION:
                await self._stream_results(operation_id, query, operation_name, variables)
                return
            if isinstance(outcome, Rejected):
                assert outcome.result.errors
                error = outcome.result.errors[0].formatted
                await self.send_message({"type": "error", "id": operation_id, "payload": error})
                return
            if isinstance(outcome, Failed):
                await self.send_data_message(outcome.result, operation_id)
            elif isinstance(outcome, Prepared):
                member = groups.join(outcome, outbox, operation_id, LEGACY_WS)
                await self._relay(groups, member, outcome.policy.shared)
            await self.send_message({"type": "complete", "id": operation_id})
        except asyncio.CancelledError:
            # `stop` (or the connection closing): the protocol confirms with complete.
            await self.send_message({"type": "complete", "id": operation_id})
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

    async def _stream_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        """Any operation, run by Strawberry as over graphql-transport-ws (extensions,
        cost, permissions): a query or mutation gives one `data`, a subscription one
        per event; then `complete`. A request error is one `error`, without
        `complete`, as the protocol has it."""
        results = await self.schema.stream(
            query,
            variable_values=variables,
            context_value=self.context,
            root_value=self.root_value,
            operation_name=operation_name,
        )
        async with aclosing(results):
            first = True
            async for result in results:
                if first and isinstance(result, PreExecutionError):
                    assert result.errors
                    payload = result.errors[0].formatted
                    await self.send_message(
                        {"type": "error", "id": operation_id, "payload": payload}
                    )
                    return
                # The schema does not enable @defer/@stream: only whole results.
                assert isinstance(result, ExecutionResult)
                await self.send_data_message(result, operation_id)
                first = False
        await self.send_message({"type": "complete", "id": operation_id})
