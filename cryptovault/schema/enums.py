"""Domain enums in the schema: registered under their API names, with a description
of the type and of every value, so the domain modules stay free of GraphQL."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import strawberry


def register_enum(
    cls: type[Enum], *, name: str, description: str, values: Mapping[str, str]
) -> None:
    """`values`: a description for each member, by name; every member needs one."""
    strawberry.enum(cls, name=name, description=description)
    definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    names = {value.name for value in definition.values}
    if names != set(values):
        raise ValueError(f"{name}: describe exactly {sorted(names)}, not {sorted(values)}")
    for value in definition.values:
        value.description = values[value.name]
