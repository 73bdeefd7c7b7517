"""Static query cost and shape, computed on the parsed and validated document before
any resolver runs.

Rules (README "Protecting the API"):
- every field returning an object costs 1, a scalar or enum 0;
- a list multiplies its items' cost by its size: `first`/`last` when the field is
  paginated (the argument, else its default, else the field's declared maximum), else
  the size declared on the field, else DEFAULT_LIST_SIZE;
- a connection's `edges` hold the page of the paginated field above them (an edge is
  a free wrapper: its node costs 1);
- each mutation field costs MUTATION_BASE_COST more, starting a subscription
  SUBSCRIPTION_BASE_COST more;
- a field may declare its own cost next to it: `strawberry.field(metadata=cost(...))`;
- introspection (`__schema`, `__type`) is costed by the same rules, its lists sized
  from the schema (`types`: how many types it has; `fields`, `args`, ...: the longest
  such list in it), aliases counted; only its depth is left out of the depth limit
  (graphql-core's MaxIntrospectionDepthRule bounds its nesting, and type references
  are legitimately deep). A plain introspection is served from a cached result at a
  small fixed cost instead (extensions.introspection).

Fragments are expanded (memoized per fragment, so a fragment spread many times is
walked once), `@skip`/`@include` are honoured with the request's variables.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    NamedTypeNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
    is_composite_type,
    is_enum_type,
    is_input_object_type,
    is_interface_type,
    is_list_type,
    is_object_type,
)
from graphql.pyutils import Undefined
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

from cryptovault.extensions.selections import OperationReader

COST_KEY = "cryptovault.cost"
DEFAULT_LIST_SIZE = 100
MUTATION_BASE_COST = 10
SUBSCRIPTION_BASE_COST = 10
INTROSPECTION_ROOTS = {"__schema": SchemaMetaFieldDef, "__type": TypeMetaFieldDef}
_BACKREF = "strawberry-definition"
_introspection_sizes: weakref.WeakKeyDictionary[GraphQLSchema, dict[tuple[str, str], int]] = (
    weakref.WeakKeyDictionary()
)


def introspection_list_sizes(schema: GraphQLSchema) -> dict[tuple[str, str], int]:
    """(introspection type, list field) -> how many items that list has at most in
    `schema` (`__Schema.types`, `__Schema.directives`: exactly)."""
    found = _introspection_sizes.get(schema)
    if found is not None:
        return found
    types = list(schema.type_map.values())
    with_fields = [t for t in types if is_object_type(t) or is_interface_type(t)]
    fields = [f for t in with_fields for f in t.fields.values()]  # type: ignore[attr-defined]
    abstract = [t for t in types if is_abstract_type(t)]
    found = {
        ("__Schema", "types"): len(types),
        ("__Schema", "directives"): len(schema.directives),
        ("__Type", "fields"): max((len(t.fields) for t in with_fields), default=0),  # type: ignore[attr-defined]
        ("__Type", "interfaces"): max((len(t.interfaces) for t in with_fields), default=0),  # type: ignore[attr-defined]
        ("__Type", "possibleTypes"): max(
            (len(schema.get_possible_types(t)) for t in abstract),  # type: ignore[arg-type]
            default=0,
        ),
        ("__Type", "enumValues"): max(
            (len(t.values) for t in types if is_enum_type(t)),  # type: ignore[attr-defined]
            default=0,
        ),
        ("__Type", "inputFields"): max(
            (len(t.fields) for t in types if is_input_object_type(t)),  # type: ignore[attr-defined]
            default=0,
        ),
        ("__Field", "args"): max((len(f.args) for f in fields), default=0),
        ("__Directive", "args"): max((len(d.args) for d in schema.directives), default=0),
        ("__Directive", "locations"): max((len(d.locations) for d in schema.directives), default=0),
    }
    _introspection_sizes[schema] = found
    return found


@dataclass(frozen=True, slots=True)
class Cost:
    """How one field is costed (see the module docstring for the defaults)."""

    # The field's own cost, replacing 1 (objects) / 0 (scalars) / the mutation base.
    value: int | None = None
    # How many items a list returns: a number, or a function of the field's arguments.
    list_size: int | Callable[[Mapping[str, Any]], int] | None = None
    # The largest page a paginated field serves (used when `first`/`last` is absent).
    max_page: int | None = None
    # This list is the page of the paginated field above (a connection's `edges`).
    page_items: bool = False


def cost(
    value: int | None = None,
    *,
    list_size: int | Callable[[Mapping[str, Any]], int] | None = None,
    max_page: int | None = None,
    page_items: bool = False,
) -> dict[str, Cost]:
    """Field metadata: `strawberry.field(metadata=cost(list_size=10))`."""
    return {COST_KEY: Cost(value, list_size, max_page, page_items)}


@dataclass(frozen=True, slots=True)
class Stats:
    cost: int = 0
    depth: int = 0
    aliases: int = 0
    directives: int = 0  # the most directives on one selection
    introspection: bool = False

    def __add__(self, other: Stats) -> Stats:
        return Stats(
            self.cost + other.cost,
            max(self.depth, other.depth),
            self.aliases + other.aliases,
            max(self.directives, other.directives),
            self.introspection or other.introspection,
        )


@dataclass(frozen=True, slots=True)
class Analysis:
    cost: int
    depth: int
    aliases: int
    directives: int
    root_fields: int
    introspection: bool


def _meta(field: GraphQLField) -> Cost | None:
    definition = (field.extensions or {}).get(_BACKREF)
    metadata = getattr(definition, "metadata", None)
    return metadata.get(COST_KEY) if metadata else None


class CostAnalyzer(OperationReader):
    """One operation of a validated document, with the request's raw variables."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any] | None,
    ) -> None:
        super().__init__(schema, document, operation, variables)
        self._memo: dict[tuple[str, int | None], Stats] = {}
        # Selection sets (by id) that select only scalar fields: an item of such a
        # selection costs nothing beyond itself, whatever it returned.
        self._flat: dict[int, bool] = {}
        self._free: bool | None = None
        self._visiting: set[str] = set()
        root = schema.get_root_type(operation.operation)
        assert root is not None, "validated documents only"
        self.root_type: GraphQLNamedType = root

    # ---- the static analysis ----

    def analyze(self) -> Analysis:
        stats = self._selections(self.operation.selection_set, self.root_type, None, root=True)
        return Analysis(
            cost=stats.cost,
            depth=stats.depth,
            aliases=stats.aliases,
            directives=stats.directives,
            root_fields=len(self._root_keys(self.operation.selection_set, set())),
            introspection=stats.introspection,
        )

    def _selections(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType,
        page: int | None,
        root: bool = False,
    ) -> Stats:
        total = Stats()
        for selection in selection_set.selections:
            if self.skipped(selection):
                continue
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, page, root)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                inner = self._selections(selection.selection_set, target or parent, page, root)
                total += inner + Stats(directives=len(selection.directives or ()))
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection.name.value, page, root)
                total += Stats(directives=len(selection.directives or ()))
        return total

    def _fragment(self, name: str, page: int | None, root: bool) -> Stats:
        key = (name, page)
        if key in self._memo:
            return self._memo[key]
        fragment = self.fragments.get(name)
        if fragment is None or name in self._visiting:
            return Stats()  # validation rejects unknown fragments and cycles
        self._visiting.add(name)
        target = self.schema.get_type(fragment.type_condition.name.value)
        stats = self._selections(fragment.selection_set, target, page, root) if target else Stats()
        self._visiting.discard(name)
        if not root:
            self._memo[key] = stats
        return stats

    def _field(
        self, node: FieldNode, parent: GraphQLNamedType, page: int | None, root: bool
    ) -> Stats:
        name = node.name.value
        alias = 1 if node.alias else 0
        directives = len(node.directives or ())
        definition = self._definition(parent, name)
        if definition is None:
            return Stats(0, 1, alias, directives)
        introspection = name in INTROSPECTION_ROOTS
        meta = _meta(definition)
        named = get_named_type(definition.type)
        child_page = page
        paged = "first" in definition.args or "last" in definition.args
        if paged:
            child_page = self._page_size(node, definition, meta)
        multiplier = self._multiplier(
            node, parent, definition, meta, page, child_page if paged else None
        )
        own = self._own_cost(meta, named, root)
        child = (
            self._selections(node.selection_set, named, child_page)
            if node.selection_set is not None
            else Stats()
        )
        return Stats(
            multiplier * (own + child.cost),
            1 if introspection else 1 + child.depth,
            alias + child.aliases,
            max(directives, child.directives),
            introspection or child.introspection,
        )

    def _definition(self, parent: GraphQLNamedType, name: str) -> GraphQLField | None:
        if name in INTROSPECTION_ROOTS and parent is self.schema.query_type:
            return INTROSPECTION_ROOTS[name]
        return getattr(parent, "fields", {}).get(name)

    def _own_cost(self, meta: Cost | None, named: GraphQLNamedType, root: bool) -> int:
        if meta is not None and meta.value is not None:
            return meta.value
        own = 1 if is_composite_type(named) else 0
        if root and self.operation.operation == OperationType.MUTATION:
            own += MUTATION_BASE_COST
        elif root and self.operation.operation == OperationType.SUBSCRIPTION:
            own += SUBSCRIPTION_BASE_COST
        return own

    def _multiplier(
        self,
        node: FieldNode,
        parent: GraphQLNamedType,
        definition: GraphQLField,
        meta: Cost | None,
        inherited_page: int | None,
        own_page: int | None,
    ) -> int:
        if not is_list_type(get_nullable_type(definition.type)):
            return 1
        if parent.name.startswith("__"):
            sizes = introspection_list_sizes(self.schema)
            return sizes.get((parent.name, node.name.value), DEFAULT_LIST_SIZE)
        if own_page is not None:
            return own_page
        if meta is not None and meta.page_items:
            return inherited_page if inherited_page is not None else DEFAULT_LIST_SIZE
        if meta is not None and meta.list_size is not None:
            size = meta.list_size
            return max(0, size(self._arguments(node, definition)) if callable(size) else size)
        return DEFAULT_LIST_SIZE

    def _page_size(self, node: FieldNode, definition: GraphQLField, meta: Cost | None) -> int:
        explicit = {a.name.value for a in node.arguments or ()}
        names = [n for n in ("first", "last") if n in explicit] or [
            n for n in ("first", "last") if n in definition.args
        ]
        for name in names:
            value = self._argument(node, definition, name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                # Past the declared maximum the resolver refuses the page anyway.
                return min(value, meta.max_page) if meta and meta.max_page else value
        if meta is not None and meta.max_page is not None:
            return meta.max_page
        return DEFAULT_LIST_SIZE

    def _arguments(self, node: FieldNode, definition: GraphQLField) -> dict[str, Any]:
        return {name: self._argument(node, definition, name) for name in definition.args}

    def _argument(self, node: FieldNode, definition: GraphQLField, name: str) -> Any:
        for argument in node.arguments or ():
            if argument.name.value == name:
                return self.value(argument.value)
        default = definition.args[name].default_value
        return None if default is Undefined else default

    def _root_keys(self, selection_set: SelectionSetNode, seen: set[str]) -> set[str]:
        keys: set[str] = set()
        for selection in selection_set.selections:
            if self.skipped(selection):
                continue
            if isinstance(selection, FieldNode):
                keys.add((selection.alias or selection.name).value)
            elif isinstance(selection, InlineFragmentNode):
                keys |= self._root_keys(selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in seen:
                    seen.add(name)
                    keys |= self._root_keys(fragment.selection_set, seen)
        return keys

    # ---- the cost of what was actually returned ----

    def actual_cost(self, data: Mapping[str, Any] | None) -> int:
        """The same rules applied to the response: lists count the items they
        returned, null objects count nothing."""
        if not data or self._free_answer():
            return 0
        return self._actual(self.operation.selection_set, self.root_type, data, True)

    def _free_answer(self) -> bool:
        """True when every root selection is a plain leaf field that costs nothing
        (e.g. `{ ping }`): whatever the answer, `_actual` comes to 0."""
        free = self._free
        if free is None:
            fields = getattr(self.root_type, "fields", {})
            free = self._free = all(
                isinstance(selection, FieldNode)
                and selection.selection_set is None
                and not selection.directives
                and (definition := fields.get(selection.name.value)) is not None
                and self._own_cost(_meta(definition), get_named_type(definition.type), root=True)
                == 0
                for selection in self.operation.selection_set.selections
            )
        return free

    def _actual(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType,
        data: Mapping[str, Any],
        root: bool = False,
    ) -> int:
        typename = data.get("__typename")
        if is_abstract_type(parent) and isinstance(typename, str):
            concrete = self.schema.get_type(typename)
            if concrete is not None:
                parent = concrete
        total = 0
        seen_keys: set[str] = set()
        seen_fragments: set[str] = set()
        stack = [selection_set]
        while stack:
            for selection in stack.pop().selections:
                condition: NamedTypeNode | None
                if self.skipped(selection):
                    continue
                if isinstance(selection, FieldNode):
                    total += self._actual_field(selection, parent, data, seen_keys, root)
                    continue
                if isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self.fragments.get(name)
                    if fragment is None or name in seen_fragments:
                        continue
                    seen_fragments.add(name)
                    condition, inner = fragment.type_condition, fragment.selection_set
                elif isinstance(selection, InlineFragmentNode):
                    condition, inner = selection.type_condition, selection.selection_set
                else:
                    continue
                if condition is None or self._applies(condition.name.value, parent):
                    stack.append(inner)
        return total

    def _applies(self, type_name: str, parent: GraphQLNamedType) -> bool:
        condition = self.schema.get_type(type_name)
        if condition is None or condition is parent:
            return condition is not None
        if is_abstract_type(condition) and is_object_type(parent):
            return self.schema.is_sub_type(condition, parent)  # type: ignore[arg-type]
        return is_abstract_type(parent)  # runtime type unknown: count what came back

    def _actual_field(
        self,
        node: FieldNode,
        parent: GraphQLNamedType,
        data: Mapping[str, Any],
        seen: set[str],
        root: bool,
    ) -> int:
        key = (node.alias or node.name).value
        if key in seen or key not in data:
            return 0
        seen.add(key)
        definition = self._definition(parent, node.name.value)
        if definition is None:
            return 0
        named = get_named_type(definition.type)
        own = self._own_cost(_meta(definition), named, root)
        value = data[key]
        if value is None:
            return own if root else 0
        items = value if isinstance(value, list) else [value]
        selection = node.selection_set
        if selection is None or self._scalars_only(selection, named):
            return own * sum(1 for item in items if item is not None)
        total = 0
        for item in items:
            if item is None:
                continue
            total += own
            if isinstance(item, Mapping):
                total += self._actual(selection, named, item)
        return total

    def _scalars_only(self, selection_set: SelectionSetNode, parent: GraphQLNamedType) -> bool:
        """True when every selection is a plain scalar field of `parent` (no fragment,
        no object, no field with its own cost): its items' children cost 0."""
        flat = self._flat.get(id(selection_set))
        if flat is None:
            fields = getattr(parent, "fields", {})
            flat = is_object_type(parent) and all(
                isinstance(selection, FieldNode)
                and selection.selection_set is None
                and (definition := fields.get(selection.name.value)) is not None
                and not is_composite_type(get_named_type(definition.type))
                and _meta(definition) is None
                for selection in selection_set.selections
            )
            self._flat[id(selection_set)] = flat
        return flat
