"""Every list pages through one declaration: each paginated field's largest page is
the same number for the cost rules (what `first` may count) and for its `first`
argument (what the pager accepts and the description promises)."""

from __future__ import annotations

import re

from graphql import get_named_type

from cryptovault.extensions.cost import _meta
from cryptovault.schema import build_schema


def paginated_fields():
    schema = build_schema()._schema
    for type_name, named in schema.type_map.items():
        if type_name.startswith("__"):
            continue
        for field_name, field in getattr(named, "fields", {}).items():
            args = getattr(field, "args", None) or {}
            if "first" in args and hasattr(get_named_type(field.type), "fields"):
                yield f"{type_name}.{field_name}", field


def test_every_paginated_field_declares_its_largest_page_once_for_cost_and_pager():
    seen = []
    for name, field in paginated_fields():
        meta = _meta(field)
        assert meta is not None and meta.max_page is not None, f"{name}: no cost(max_page=...)"
        described = re.search(r"1 to (\d+)", field.args["first"].description or "")
        assert described is not None, f"{name}: `first` does not state its range"
        assert int(described.group(1)) == meta.max_page, name
        default = field.args["first"].default_value
        assert isinstance(default, int) and 1 <= default <= meta.max_page, name
        seen.append(name)
    # Every list of the API: a new one is checked the same way.
    assert len(seen) >= 11, seen
