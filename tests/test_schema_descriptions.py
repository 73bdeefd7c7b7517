"""Every type, field, argument, enum value and input field of the schema has a
description: it is what partners read in GraphiQL and generated clients."""

from __future__ import annotations

from graphql import (
    GraphQLSchema,
    is_enum_type,
    is_input_object_type,
    is_interface_type,
    is_object_type,
)

from cryptovault.schema import build_schema


def undescribed(schema: GraphQLSchema) -> list[str]:
    """Schema coordinates (`Type.field(arg:)`, `Enum.VALUE`) without a description."""
    missing: list[str] = []

    def check(coordinate: str, description: str | None) -> None:
        if not (description or "").strip():
            missing.append(coordinate)

    for name, named in sorted(schema.type_map.items()):
        if name.startswith("__"):
            continue
        check(name, named.description)
        if is_object_type(named) or is_interface_type(named):
            for field_name, field in named.fields.items():  # type: ignore[union-attr]
                check(f"{name}.{field_name}", field.description)
                for arg_name, arg in field.args.items():
                    check(f"{name}.{field_name}({arg_name}:)", arg.description)
        elif is_input_object_type(named):
            for field_name, field in named.fields.items():  # type: ignore[union-attr]
                check(f"{name}.{field_name}", field.description)
        elif is_enum_type(named):
            for value_name, value in named.values.items():  # type: ignore[union-attr]
                check(f"{name}.{value_name}", value.description)
    return missing


def test_every_type_field_argument_enum_value_and_input_field_is_described():
    missing = undescribed(build_schema()._schema)
    assert not missing, f"{len(missing)} without a description: " + ", ".join(missing)


def test_the_walker_finds_what_lacks_a_description():
    from graphql import build_schema as from_sdl

    schema = from_sdl('"""Q"""\ntype Query { a(x: Int): E }\nenum E { ONE }')
    assert undescribed(schema) == ["E", "E.ONE", "Query.a", "Query.a(x:)"]
