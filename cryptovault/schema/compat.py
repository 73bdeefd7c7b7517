"""Schema compatibility: what a new schema breaks for clients of the previous one.

The rule partners rely on: nothing is removed or changed incompatibly without being
deprecated first. graphql-core's `find_breaking_changes` lists what breaks; a removal
is allowed when the removed field, argument, input field or enum value carried
`@deprecated` in the previous schema (and a removed type when everything that used it
did). Anything else it lists is refused. Dangerous changes (an enum value or an
optional argument added, a default changed) are reported, never refused."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from graphql import (
    BreakingChange,
    BreakingChangeType,
    GraphQLSchema,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
    get_named_type,
    is_enum_type,
    is_input_object_type,
    is_interface_type,
    is_object_type,
    is_union_type,
)

_FIELD = re.compile(r"Field (\w+)\.(\w+) was removed\.")
_ARG = re.compile(r"Argument (\w+)\.(\w+)\((\w+):\) was removed\.")
_VALUE = re.compile(r"Enum value (\w+)\.(\w+) was removed\.")
_TYPE = re.compile(r"(\w+) was removed\.")


def _deprecated(schema: GraphQLSchema, change: BreakingChange) -> bool:
    """Whether `change` removes something the old `schema` had deprecated."""
    text = change.description
    if change.type == BreakingChangeType.FIELD_REMOVED and (m := _FIELD.fullmatch(text)):
        fields = getattr(schema.get_type(m[1]), "fields", {})
        return getattr(fields.get(m[2]), "deprecation_reason", None) is not None
    if change.type == BreakingChangeType.ARG_REMOVED and (m := _ARG.fullmatch(text)):
        field = getattr(schema.get_type(m[1]), "fields", {}).get(m[2])
        arg = field.args.get(m[3]) if field is not None else None
        return getattr(arg, "deprecation_reason", None) is not None
    if change.type == BreakingChangeType.VALUE_REMOVED_FROM_ENUM and (m := _VALUE.fullmatch(text)):
        enum = schema.get_type(m[1])
        value = enum.values.get(m[2]) if is_enum_type(enum) else None  # type: ignore[union-attr]
        return getattr(value, "deprecation_reason", None) is not None
    if change.type == BreakingChangeType.TYPE_REMOVED and (m := _TYPE.fullmatch(text)):
        return _only_deprecated_uses(schema, m[1])
    return False


def _only_deprecated_uses(schema: GraphQLSchema, name: str) -> bool:
    """True when every field, argument and input field of `schema` typed `name` is
    deprecated, and no union or object lists it (a type nothing live reaches)."""
    for other in schema.type_map.values():
        if other.name.startswith("__") or other.name == name:
            continue
        if is_union_type(other) and any(t.name == name for t in other.types):  # type: ignore[union-attr]
            return False
        if (is_object_type(other) or is_interface_type(other)) and any(
            i.name == name
            for i in other.interfaces  # type: ignore[union-attr]
        ):
            return False
        if not (is_object_type(other) or is_interface_type(other) or is_input_object_type(other)):
            continue
        for field in other.fields.values():  # type: ignore[union-attr]
            uses = [field] if get_named_type(field.type).name == name else []
            uses += [
                a
                for a in getattr(field, "args", {}).values()
                if get_named_type(a.type).name == name
            ]
            if any(use.deprecation_reason is None for use in uses):
                return False
    return True


def unannounced_breaking_changes(old_sdl: str, new_sdl: str) -> list[str]:
    """The breaking changes from `old_sdl` to `new_sdl` that no deprecation announced."""
    old, new = build_schema(old_sdl), build_schema(new_sdl)
    return [c.description for c in find_breaking_changes(old, new) if not _deprecated(old, c)]


def dangerous_changes(old_sdl: str, new_sdl: str) -> list[str]:
    """Changes that can surprise a client without breaking it (e.g. a new enum value)."""
    return [
        c.description for c in find_dangerous_changes(build_schema(old_sdl), build_schema(new_sdl))
    ]


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _commit(cwd: Path, ref: str) -> str | None:
    found = _git(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return found.strip() if found else None


def previous_schema(path: Path, base: str | None = None) -> tuple[str, str] | None:
    """(the ref compared with, the schema file at that ref): `base` when given; else
    where HEAD left origin/main (the merge base), unless that is HEAD itself; else the
    commit before HEAD. None when there is nothing to compare with (not a git checkout,
    a first commit, a shallow clone, a file that did not exist then)."""
    cwd = path.resolve().parent
    head = _commit(cwd, "HEAD")
    if head is None:
        return None
    candidates: list[str] = []
    if base is not None:
        candidates.append(base)
    else:
        fork = _git(cwd, "merge-base", "HEAD", "origin/main")
        if fork and fork.strip() != head:
            candidates.append(fork.strip())
        candidates.append("HEAD~1")
    for ref in candidates:
        if _commit(cwd, ref) is None:
            continue
        text = _git(cwd, "show", f"{ref}:./{path.name}")
        return (ref, text) if text is not None else None
    return None
