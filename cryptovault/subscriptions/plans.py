"""A subscription's selection set run without graphql-core's executor, when it is
plain enough that the result is known to be the same: one root field of an object
type whose selected fields are all leaves (scalars, enums) with no arguments, no
directives, no fragments and Strawberry's default resolver (an attribute read).

graphql-core's execution of such a selection is: the root field's resolver (for a
subscription, the event itself), the object type's `is_type_of`, then per field the
attribute and the leaf type's `coerce_output_value`. `Plan.run` does exactly that
and nothing else; anything that would make graphql-core report an error (a null in
a non-null field, a value the scalar refuses, a resolver returning an exception, an
object of another type, any exception) makes it answer `None`, and the caller runs
graphql-core instead, which then reports the error as it always does. A selection
set that is not plain gets no plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLEnumType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    Undefined,
)

Leaf = tuple[str, Callable[..., Any], Callable[[Any], Any], bool]


@dataclass(frozen=True, slots=True)
class Plan:
    root_key: str
    root_resolve: Callable[..., Any]
    is_type_of: Callable[..., Any] | None
    # Per selected field: response key, resolver, the leaf type's output coercion,
    # whether the field is non-null.
    leaves: tuple[Leaf, ...]

    def run(self, event: Any) -> dict[str, Any] | None:
        """The result's `data` for `event`, or None: let graphql-core execute it."""
        try:
            value = self.root_resolve(event, None)
            if value is None or isinstance(value, Exception):
                return None
            if self.is_type_of is not None and self.is_type_of(value, None) is not True:
                return None
            data: dict[str, Any] = {}
            for key, resolve, coerce, non_null in self.leaves:
                item = resolve(value, None)
                if item is None:
                    if non_null:
                        return None
                    data[key] = None
                    continue
                if isinstance(item, Exception):
                    return None
                coerced = coerce(item)
                if coerced is None or coerced is Undefined:
                    return None
                data[key] = coerced
        except Exception:
            return None
        return {self.root_key: data}


def plan_for(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> Plan | None:
    """The plan for the document's subscription operation, if it is plain."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(document.definitions) != len(operations):
        return None  # fragments
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return None
    operation = operations[0]
    root = schema.subscription_type
    if operation.operation is not OperationType.SUBSCRIPTION or root is None:
        return None
    if operation.directives or len(operation.selection_set.selections) != 1:
        return None
    node = operation.selection_set.selections[0]
    if not isinstance(node, FieldNode) or node.directives or node.selection_set is None:
        return None
    root_field = root.fields.get(node.name.value)
    if root_field is None or root_field.resolve is None:
        return None
    object_type = root_field.type
    if isinstance(object_type, GraphQLNonNull):
        object_type = object_type.of_type
    if not isinstance(object_type, GraphQLObjectType):
        return None
    leaves: list[Leaf] = []
    keys: set[str] = set()
    for selection in node.selection_set.selections:
        if (
            not isinstance(selection, FieldNode)
            or selection.directives
            or selection.arguments
            or selection.selection_set is not None
        ):
            return None
        field = object_type.fields.get(selection.name.value)
        if field is None or not getattr(field.resolve, "_is_default", False):
            return None  # __typename, or a field with a resolver of its own
        key = selection.alias.value if selection.alias else selection.name.value
        if key in keys:
            return None  # merged fields: leave them to graphql-core
        keys.add(key)
        leaf_type = field.type
        non_null = isinstance(leaf_type, GraphQLNonNull)
        if non_null:
            leaf_type = leaf_type.of_type  # type: ignore[union-attr]
        if not isinstance(leaf_type, GraphQLScalarType | GraphQLEnumType):
            return None
        leaves.append((key, field.resolve, leaf_type.coerce_output_value, non_null))  # type: ignore[arg-type]
    root_key = node.alias.value if node.alias else node.name.value
    return Plan(root_key, root_field.resolve, object_type.is_type_of, tuple(leaves))
