"""Grouped subscription execution: a subscription runs once per event for all of its
subscribers, and every subscriber's socket receives the same serialized bytes.

Subscribing (per subscriber, exactly Strawberry's pipeline and extensions): parse,
validate, the schema extensions' checks (cost, limits), then the root field's
subscribe resolver, which runs its permission classes and returns the source stream.
A subscriber is then keyed by (normalized document, operation name, variables, and
the viewer for private fields — see schema/streams.py) and joins the group with that key; if
the group already exists, the stream the resolver just returned is closed unstarted.

A group owns ONE source stream. For each event it executes the operation's selection
set once (graphql-core, the event as root value), serializes the result once (orjson)
and hands each member's socket the frame `head + payload + "}"`, where `head` holds
the member's own protocol envelope and operation id. The group ends when its source
does (each member gets the final error, if any, then `complete`) or when its last
member leaves (the source is closed).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Any

import orjson
import strawberry
from graphql import DocumentNode, GraphQLError, print_ast
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution import create_source_event_stream
from graphql.execution.collect_fields import collect_fields
from strawberry.exceptions import MissingQueryError
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import _coerce_error, _coerce_pre_execution_error
from strawberry.types.execution import ExecutionContext, ExecutionResult, PreExecutionError
from strawberry.types.graphql import OperationType

from cryptovault.errors import DomainError
from cryptovault.events.hub import HubStream
from cryptovault.extensions.masking import map_error
from cryptovault.schema.streams import StreamPolicy, policy_of
from cryptovault.subscriptions.outbox import Outbox
from cryptovault.subscriptions.plans import Plan, plan_for

log = logging.getLogger(__name__)

# The envelope of a `next` (graphql-transport-ws) and a `data` (graphql-ws) message,
# in the key order Strawberry writes them, around the operation id and the payload.
TRANSPORT_WS, LEGACY_WS = 0, 1
_HEADS = (('{"id":', ',"type":"next","payload":'), ('{"type":"data","id":', ',"payload":'))
# Members served per slice of a fan-out before yielding to the event loop, so one
# big group does not hold up every other socket and request.
FANOUT_SLICE = 512
_SUBSCRIPTION_ONLY = (OperationType.SUBSCRIPTION,)


class NotASubscription:
    """The operation is a query or mutation: the caller runs it the usual way."""


NOT_A_SUBSCRIPTION = NotASubscription()


@dataclass(slots=True)
class Rejected:
    """Refused before execution (syntax, validation, variables, permissions): the
    protocol's `error` message."""

    result: ExecutionResult


@dataclass(slots=True)
class Failed:
    """A schema extension refused the operation as it started (cost, budget): one
    `next` carrying the errors, then `complete` — as Strawberry does."""

    result: ExecutionResult


@dataclass(slots=True)
class Prepared:
    key: Hashable
    document: DocumentNode
    operation_name: str | None
    variables: dict[str, Any] | None
    context: Any
    response_key: str
    field_name: str  # the root field (e.g. "prices"): its policy and metrics label
    policy: StreamPolicy
    source: AsyncIterator[Any]
    # What the extensions report with the subscriber's first event (e.g. its cost).
    extensions: dict[str, Any] = field(default_factory=dict)


class Member:
    """One subscription of one socket, inside a group."""

    __slots__ = ("ended", "extensions", "group", "head", "left", "metrics_field", "outbox")

    def __init__(
        self, outbox: Outbox, operation_id: str, protocol: int, extensions: dict[str, Any]
    ) -> None:
        before, after = _HEADS[protocol]
        self.head = before + orjson.dumps(operation_id).decode() + after
        self.outbox = outbox
        self.extensions = extensions or None
        self.group: Group | None = None
        # True once the subscriber went away (complete/stop, disconnect): its frames
        # still waiting in the socket's queue are skipped.
        self.left = False
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The root field counted in the metrics' live subscriptions while it lives.
        self.metrics_field: str | None = None

    async def wait(self) -> None:
        """Until the group's source ends (its final frames are queued by then)."""
        await self.ended


class Group:
    def __init__(self, registry: SubscriptionGroups, prepared: Prepared, context: Any) -> None:
        self.registry = registry
        self.key = prepared.key
        self.document = prepared.document
        self.operation_name = prepared.operation_name
        self.variables = prepared.variables
        self.context = context
        self.response_key = prepared.response_key
        self.coalesce_by = prepared.policy.coalesce_by
        self.source = prepared.source
        self.members: dict[Member, None] = {}
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        # A plain selection of leaves runs without graphql-core's executor (plans.py).
        self.plan: Plan | None = plan_for(
            registry.schema._schema, prepared.document, prepared.operation_name
        )

    def start(self) -> None:
        # Eager: the source subscribes to its topic before the subscriber's `subscribe`
        # message is fully handled, as Strawberry's per-subscriber streams do.
        task = asyncio.Task(
            self._pump(),
            loop=asyncio.get_running_loop(),
            eager_start=True,
            context=contextvars.Context(),
        )
        if not task.done():
            self.task = task

    async def _pump(self) -> None:
        error: GraphQLError | None = None
        try:
            async for event in self.source:
                await self._publish(event)
                if self.closed:  # its last member went away meanwhile
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _source_error(exc, self.response_key)
        finally:
            self._end(error)
            close = getattr(self.source, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing a subscription source failed")

    async def _publish(self, event: Any) -> None:
        result = self.registry.execute(self, event)
        if optimized_is_awaitable(result):
            result = await result
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [map_error(e).formatted for e in result.errors]
        tail = orjson.dumps(payload).decode() + "}"
        key = self.coalesce_by(event) if self.coalesce_by is not None else None
        members = tuple(self.members)
        for start in range(0, len(members), FANOUT_SLICE):
            if start:
                await asyncio.sleep(0)
            for member in members[start : start + FANOUT_SLICE]:
                if member.left:
                    continue
                if member.outbox.closed:
                    # Its socket is gone or was closed as too slow: end it now rather
                    # than when the connection finally goes away.
                    self._drop(member)
                    continue
                if member.extensions is not None:
                    frame = member.head + _with_extensions(payload, member)
                else:
                    frame = member.head + tail
                member.outbox.push(frame, key, member)

    def _end(self, error: GraphQLError | None) -> None:
        """The source is over: each member gets the error (if any); its task then
        sends `complete`."""
        if not self.closed:
            self.closed = True
            self.registry._forget(self)
        members, self.members = self.members, {}
        tail = None
        if error is not None:
            tail = orjson.dumps({"data": None, "errors": [error.formatted]}).decode() + "}"
        for member in members:
            member.group = None
            if tail is not None and not member.left:
                member.outbox.push(member.head + tail, None, member)
            if not member.ended.done():
                member.ended.set_result(None)

    def _drop(self, member: Member) -> None:
        self.members.pop(member, None)
        member.group = None
        if not member.ended.done():
            member.ended.set_result(None)
        if not self.members and not self.closed:
            self.closed = True
            self.registry._forget(self)

    def leave(self, member: Member) -> None:
        self.members.pop(member, None)
        if not self.members and not self.closed:
            # The group dies with its last member: stop the source.
            self.closed = True
            self.registry._forget(self)
            if self.task is not None:
                self.task.cancel()


def _with_extensions(payload: dict[str, Any], member: Member) -> str:
    """The member's first frame also carries what the extensions reported when it
    subscribed (serialized for this member only, once)."""
    extensions, member.extensions = member.extensions, None
    return orjson.dumps({**payload, "extensions": extensions}).decode() + "}"


def _source_error(exc: Exception, response_key: str) -> GraphQLError:
    if isinstance(exc, DomainError | GraphQLError):
        # As Strawberry reports an error of the source stream: no path.
        return map_error(_coerce_error(exc))
    # Anything else is unexpected: with a path, map_error masks and logs it.
    return map_error(GraphQLError(str(exc), original_error=exc, path=[response_key]))


@functools.lru_cache(maxsize=2048)
def _normalized(document: DocumentNode) -> str:
    return print_ast(document)


def _variables_key(variables: dict[str, Any] | None) -> Hashable:
    try:
        # decode(): a right-sized copy; orjson's bytes keep a 4 KB buffer, and every
        # subscriber holds its key.
        return orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(variables or {}, sort_keys=True, default=repr)


class SubscriptionGroups:
    """This instance's subscription groups, for one schema."""

    def __init__(self, schema: strawberry.Schema, send_queue: int = 1000) -> None:
        # Set by the app: live subscriptions per root field (Prometheus, admin stats).
        self.metrics: Any = None
        self.schema = schema
        # Frames one socket may have waiting (Outbox.max_frames).
        self.send_queue = send_queue
        self._groups: dict[Hashable, Group] = {}
        self._policies: dict[str, StreamPolicy] = {}
        self._executor_class = schema.execution_context_class

    # -- subscribing ----------------------------------------------------------------

    async def prepare(
        self,
        query: str | None,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        connection: Hashable,
    ) -> Prepared | Rejected | Failed | NotASubscription:
        """Everything Strawberry does when a subscription starts, for one subscriber:
        the extensions' operation, parsing, validation and execution hooks, then the
        root field's subscribe resolver (with its permission classes)."""
        schema = self.schema
        ec = schema._create_execution_context(
            query=query,
            allowed_operation_types=_SUBSCRIPTION_ONLY,
            variable_values=variables,
            context_value=context,
            operation_name=operation_name,
        )
        extensions = schema.get_extensions()
        for extension in extensions:
            extension.execution_context = ec
        runner = schema.create_extensions_runner(ec, extensions)
        async with runner.operation():
            try:
                initial_error = await schema._prepare_operation_async(ec, runner)
            except InvalidOperationTypeError:
                return NOT_A_SUBSCRIPTION
            except (MissingQueryError, CannotGetOperationTypeError) as exc:
                initial_error = PreExecutionError(
                    data=None, errors=[_coerce_pre_execution_error(exc)]
                )
            if initial_error is not None:
                initial_error.extensions = await runner.get_extensions_results(ec)
                return Rejected(await self._finish(ec, runner, initial_error))
            assert ec.graphql_document is not None
            try:
                async with runner.executing():
                    started = await self._subscribe(ec, extensions)
            except Exception as exc:
                error = GraphQLExecutionResult(data=None, errors=[_coerce_error(exc)])
                return Failed(await self._finish(ec, runner, error))
            if isinstance(started, GraphQLExecutionResult):
                failure = PreExecutionError(data=None, errors=started.errors)
                return Rejected(await self._finish(ec, runner, failure))
            source, response_key, field_name = started
            policy = self._policy(field_name)
            viewer_key: Hashable = None
            if not policy.shared:
                viewer = getattr(context, "viewer", None)
                viewer_key = ("connection", connection) if viewer is None else viewer
                try:
                    hash(viewer_key)
                except TypeError:
                    viewer_key = ("connection", connection)
            key = (
                _normalized(ec.graphql_document),
                ec.operation_name,
                _variables_key(variables),
                viewer_key,
            )
            return Prepared(
                key=key,
                document=ec.graphql_document,
                operation_name=ec.operation_name,
                variables=variables,
                context=context,
                response_key=response_key,
                field_name=field_name,
                policy=policy,
                source=source,
                extensions=await runner.get_extensions_results(ec),
            )

    async def _subscribe(
        self, ec: ExecutionContext, extensions: list[Any]
    ) -> GraphQLExecutionResult | tuple[AsyncIterator[Any], str, str]:
        schema = self.schema
        executor = self._executor_class.build(
            schema._schema,
            ec.graphql_document,  # type: ignore[misc,return-value,arg-type]
            None,
            ec.context,
            ec.variables,
            ec.operation_name,
            middleware=schema._get_middleware_manager(extensions),
            is_awaitable=optimized_is_awaitable,  # type: ignore[misc,return-value,arg-type]
            operation_extensions=None,
        )
        if isinstance(executor, list):
            return GraphQLExecutionResult(data=None, errors=executor)
        stream = create_source_event_stream(executor)
        if optimized_is_awaitable(stream):
            stream = await stream  # type: ignore[misc,return-value,arg-type]
        if isinstance(stream, GraphQLExecutionResult):
            return stream
        root = schema._schema.subscription_type
        assert root is not None
        fields = collect_fields(
            schema._schema, executor.fragments, executor.variable_values, root, executor.operation
        ).grouped_field_set
        response_key, details = next(iter(fields.items()))
        return stream, response_key, details[0].node.name.value  # type: ignore[misc,return-value,arg-type]

    async def _finish(
        self, ec: ExecutionContext, runner: SchemaExtensionsRunner, result: Any
    ) -> ExecutionResult:
        """Strawberry's handling of a result that ends the operation (error processing,
        extension results, the error mapping of `on_stream_result`)."""
        handled = await self.schema._handle_execution_result(ec, result, runner)
        async with runner.on_stream_result(handled):
            pass
        return handled

    def _policy(self, field_name: str) -> StreamPolicy:
        policy = self._policies.get(field_name)
        if policy is None:
            root = self.schema._schema.subscription_type
            assert root is not None
            found = self.schema.get_field_for_type(field_name, root.name)
            policy = policy_of(found.metadata if found is not None else None)
            self._policies[field_name] = policy
        return policy

    def join(self, prepared: Prepared, outbox: Outbox, operation_id: str, protocol: int) -> Member:
        """Add a subscriber to its group (creating the group and starting its source
        when it is the first)."""
        member = Member(outbox, operation_id, protocol, prepared.extensions)
        if self.metrics is not None:
            member.metrics_field = prepared.field_name
            self.metrics.subscription_started(member.metrics_field)
        group = self._groups.get(prepared.key)
        if group is None:
            context = prepared.context
            if dataclasses.is_dataclass(context) and not isinstance(context, type):
                viewer = None if prepared.policy.shared else getattr(context, "viewer", None)
                context = dataclasses.replace(context, viewer=viewer, state={})  # type: ignore[type-var]
            group = Group(self, prepared, context)
            self._groups[prepared.key] = group
            member.group = group
            group.members[member] = None
            group.start()
        else:
            member.group = group
            group.members[member] = None
            _close_unstarted(prepared.source)
        return member

    def leave(self, member: Member) -> None:
        """The subscriber went away (complete/stop, disconnect, cancelled task)."""
        if self.metrics is not None and member.metrics_field is not None:
            self.metrics.subscription_ended(member.metrics_field)
            member.metrics_field = None
        group = member.group
        if group is None:  # its group already ended
            return
        member.left = True
        member.group = None
        group.leave(member)

    def _forget(self, group: Group) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]

    # -- per event ------------------------------------------------------------------

    def execute(self, group: Group, event: Any) -> Any:
        """The operation's selection set for one event, the event as root value. A
        fresh executor (and context state) per event: graphql-core's per-subscription
        executor memoizes subfields per event and would grow without bound. A plain
        selection of leaves runs from its plan (plans.py): the same result, unless
        the plan declines, and then graphql-core runs it."""
        plan = group.plan
        if plan is not None:
            data = plan.run(event)
            if data is not None:
                return GraphQLExecutionResult(data=data, errors=None)
        context = group.context
        if dataclasses.is_dataclass(context) and hasattr(context, "state"):
            context = dataclasses.replace(context, state={})  # type: ignore[type-var]
        executor = self._executor_class.build(
            self.schema._schema,
            group.document,
            event,
            context,
            group.variables,
            group.operation_name,
            is_awaitable=optimized_is_awaitable,  # type: ignore[misc,return-value,arg-type]
            operation_extensions=None,
        )
        if isinstance(executor, list):
            return GraphQLExecutionResult(data=None, errors=executor)
        return executor.execute_operation(False)

    # -- introspection and shutdown -------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "groups": len(self._groups),
            "subscribers": sum(len(g.members) for g in self._groups.values()),
        }

    async def close(self) -> None:
        """Stop every group (shutdown)."""
        tasks = [g.task for g in self._groups.values() if g.task is not None]
        for group in list(self._groups.values()):
            group.closed = True
        self._groups.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _close_unstarted(source: Any) -> None:
    """Close the source stream a joining subscriber's resolver returned: the group
    already has one. A HubStream, or an async generator that never started (it runs
    no code when closed), closes at once; anything else in the background."""
    if isinstance(source, HubStream):
        source.close()  # no task per joining subscriber
        return
    if inspect.isasyncgen(source) and inspect.getasyncgenstate(source) == inspect.AGEN_CREATED:
        closing = source.aclose()
        try:
            closing.send(None)
        except StopIteration:
            return
        closing.close()  # pragma: no cover - an unstarted generator never suspends
        return
    close = getattr(source, "aclose", None)
    if close is not None:
        task = asyncio.ensure_future(close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Future[Any]] = set()
