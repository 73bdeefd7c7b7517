"""Introspection served from one result per schema.

What GraphiQL and code generators send (`getIntrospectionQuery()` with any of its
options) selects a part of the schema's full introspection result: the result is
computed once per schema and each such operation is answered by projecting it, which
costs a fraction of executing it (README "Query cost"). An operation is answered this
way ("plain") when its root selects only `__schema` (and `__typename`), with no alias,
no argument but `includeDeprecated`, no directive but `@skip`/`@include`, and every
field it selects is present in the full result; anything else (aliases, `__type`,
nesting beyond the full query) is executed and priced like any other selection.

Invariant: a projection returns exactly what graphql-core would have returned for
the same selection, or None (then the operation is executed normally).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_introspection_query,
    get_named_type,
    graphql_sync,
)
from graphql.type.introspection import SchemaMetaFieldDef

from cryptovault.extensions.caches import OperationCache
from cryptovault.extensions.selections import OperationReader

__all__ = ["CACHED_INTROSPECTION_COST", "answer", "full_result"]

# What a plain introspection costs (README "Query cost"): answering it from the cached
# result takes 13-20x less CPU than executing it (bench.introspection: 1.8-3.2 ms
# against 37-42 ms for 114 KB, HTTP included).
CACHED_INTROSPECTION_COST = 10
# Selections visited while planning one operation: a plain introspection has a few
# hundred; more means fragments spread over and over, which are executed and priced.
MAX_PLAN_NODES = 5_000
ANSWERS_CACHED = 256

# Everything every option of graphql-core's introspection query selects, with
# deprecated fields, arguments, input fields, enum values and directives included.
FULL_QUERY = get_introspection_query(
    descriptions=True,
    specified_by_url=True,
    directive_is_repeatable=True,
    schema_description=True,
    input_value_deprecation=True,
    experimental_directive_deprecation=True,
    one_of=True,
)

_full: weakref.WeakKeyDictionary[GraphQLSchema, dict[str, Any]] = weakref.WeakKeyDictionary()


class _NotPlain(Exception):
    """The operation cannot be answered from the full result."""


# A plan: response key -> (field name, includeDeprecated, the plan below it or None).
Plan = dict[str, tuple[str, bool, "Plan | None"]]


def full_result(schema: GraphQLSchema) -> dict[str, Any]:
    """The full introspection result of `schema`, computed on first use."""
    found = _full.get(schema)
    if found is None:
        result = graphql_sync(schema, FULL_QUERY)
        assert result.errors is None and result.data is not None, result.errors
        found = _full[schema] = result.data
    return found


def answer(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The `data` of a plain introspection operation, or None when it is not one."""
    return _answers.get(schema, document, operation, variables)


def _answer(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    root = schema.query_type
    if root is None:
        return None
    planner = _Planner(schema, document, operation, variables)
    try:
        plan = planner.plan(operation.selection_set, root)
        data: dict[str, Any] = {}
        for key, (name, _, below) in plan.items():
            if name == "__typename":
                data[key] = root.name
            elif name == "__schema" and below is not None:
                schema_type = schema.get_type("__Schema")
                assert isinstance(schema_type, GraphQLObjectType)
                data[key] = _project(below, full_result(schema)["__schema"], schema_type)
            else:
                return None
    except _NotPlain:
        return None
    return data


_answers = OperationCache(ANSWERS_CACHED, _answer)


class _Planner(OperationReader):
    # Selections visited so far (per instance once counting starts).
    visited = 0

    def plan(self, selection_set: SelectionSetNode, parent: GraphQLObjectType) -> Plan:
        plan: Plan = {}
        self._merge(plan, selection_set, parent)
        return plan

    def _merge(
        self, plan: Plan, selection_set: SelectionSetNode, parent: GraphQLObjectType
    ) -> None:
        for selection in selection_set.selections:
            self.visited += 1
            if self.visited > MAX_PLAN_NODES:
                raise _NotPlain
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                self._field(plan, selection, parent)
                continue
            if isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is None:
                    raise _NotPlain
                condition, inner = fragment.type_condition.name.value, fragment.selection_set
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition.name.value if selection.type_condition else ""
                inner = selection.selection_set
            else:
                raise _NotPlain
            if condition and condition != parent.name:
                raise _NotPlain  # introspection types are objects: validation forbids it
            self._merge(plan, inner, parent)

    def _field(self, plan: Plan, node: FieldNode, parent: GraphQLObjectType) -> None:
        name = node.name.value
        if node.alias is not None and node.alias.value != name:
            raise _NotPlain
        include_deprecated = False
        for argument in node.arguments or ():
            if argument.name.value != "includeDeprecated":
                raise _NotPlain
            include_deprecated = self.value(argument.value) is True
        if name == "__typename":
            plan.setdefault(name, (name, False, None))
            return
        definition = (
            SchemaMetaFieldDef
            if name == "__schema" and parent is self.schema.query_type
            else parent.fields.get(name)
        )
        if definition is None:
            raise _NotPlain
        below: Plan | None = None
        if node.selection_set is not None:
            named = get_named_type(definition.type)
            if not isinstance(named, GraphQLObjectType):
                raise _NotPlain
            existing = plan.get(name)
            below = existing[2] if existing is not None and existing[2] is not None else {}
            self._merge(below, node.selection_set, named)
        previous = plan.get(name)
        if previous is not None and previous[1] != include_deprecated:
            raise _NotPlain  # validation refuses conflicting arguments anyway
        plan[name] = (name, include_deprecated, below)

    def _included(self, node: Any) -> bool:
        if any(d.name.value not in ("skip", "include") for d in node.directives or ()):
            raise _NotPlain
        return not self.skipped(node)


def _project(plan: Plan, data: Mapping[str, Any], parent: GraphQLObjectType) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (name, include_deprecated, below) in plan.items():
        if name == "__typename":
            out[key] = parent.name
            continue
        if name not in data:
            raise _NotPlain  # the full result does not hold it
        value = data[name]
        if value is None or below is None:
            out[key] = value
            continue
        named = get_named_type(parent.fields[name].type)
        assert isinstance(named, GraphQLObjectType)
        if isinstance(value, list):
            if "includeDeprecated" in parent.fields[name].args and not include_deprecated:
                value = [item for item in value if not _deprecated(item)]
            out[key] = [_project(below, item, named) for item in value]
        else:
            out[key] = _project(below, value, named)
    return out


def _deprecated(item: Mapping[str, Any]) -> bool:
    if "isDeprecated" not in item:
        raise _NotPlain
    return bool(item["isDeprecated"])
