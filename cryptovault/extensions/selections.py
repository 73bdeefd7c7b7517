"""Reading one operation of a validated document with the request's variables (their
defaults filled in), its fragments and its `@skip`/`@include` directives: what the cost
analysis and the introspection answers both walk."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLSchema,
    OperationDefinitionNode,
    ValueNode,
    VariableNode,
    value_from_ast_untyped,
)

__all__ = ["OperationReader"]


class OperationReader:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any] | None,
    ) -> None:
        self.schema = schema
        self.operation = operation
        self.variables = dict(variables or {})
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if name not in self.variables and definition.default_value is not None:
                self.variables[name] = value_from_ast_untyped(definition.default_value)
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }

    def value(self, node: ValueNode) -> Any:
        """An argument's value: a variable's (as sent), or the literal's."""
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        return value_from_ast_untyped(node, self.variables)

    def skipped(self, node: Any) -> bool:
        """Whether `@skip`/`@include` leave this selection out."""
        for directive in node.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                continue
            condition = next((a.value for a in directive.arguments if a.name.value == "if"), None)
            if condition is None:
                continue
            value = self.value(condition)
            if (name == "skip" and value is True) or (name == "include" and value is False):
                return True
        return False
