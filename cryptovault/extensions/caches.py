"""Bounded caches for what the schema extensions compute per document: validation
errors, cost analyses, introspection answers. Least recently used out first.

Documents are keyed by identity (a document's own hash walks its whole tree): every
entry keeps the objects whose ids are in its key alive, so no other object can take
one of those ids while the entry exists.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import orjson
from graphql import DocumentNode, GraphQLSchema, OperationDefinitionNode

__all__ = ["Lru", "OperationCache"]


class Lru[K: Hashable, V]:
    """At most `size` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, tuple[tuple[object, ...], V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, keep: tuple[object, ...] = ()) -> None:
        """Store `value`; `keep` holds the objects whose ids `key` uses."""
        self._entries[key] = (keep, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


type _Compute[V] = Callable[
    [GraphQLSchema, DocumentNode, OperationDefinitionNode, Mapping[str, Any] | None], V
]


class OperationCache[V]:
    """`compute(schema, document, operation, variables)`, remembered for recent
    arguments (variables compared by their JSON)."""

    def __init__(self, size: int, compute: _Compute[V]) -> None:
        # Values are wrapped in a tuple so that a cached None is told from a miss.
        self._lru: Lru[tuple[int, int, int, bytes], tuple[V]] = Lru(size)
        self._compute = compute

    def get(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any] | None,
    ) -> V:
        try:
            frozen = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS) if variables else b""
        except TypeError:  # not JSON (only from in-process callers): no caching
            return self._compute(schema, document, operation, variables)
        key = (id(schema), id(document), id(operation), frozen)
        found = self._lru.get(key)
        if found is not None:
            return found[0]
        value = self._compute(schema, document, operation, variables)
        self._lru.put(key, (value,), keep=(schema, document))
        return value
