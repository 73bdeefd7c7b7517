"""Adversarial review (rev2): `{ ping }`-like documents answered without an executor
(prepared.py's direct path, after the warm-up run) against Strawberry's view."""

from __future__ import annotations

import pytest

from tests.harness import running
from tests.test_lean_path import _both_paths

DOCUMENTS = [
    "{ a: ping b: ping }",
    "{ ping ping }",
    "{ b: ping a: ping ping }",
    "{ ...F } fragment F on Query { ping }",
    "{ ... on Query { ping } p: ping }",
    "query Named { ping }",
    "{ ping __typename }",
    "{ __typename ping }",
    "{ ping @include(if: true) }",
    "{ ping @skip(if: true) }",
    "query($x: Int) { ping }",
]


@pytest.mark.parametrize("query", DOCUMENTS)
async def test_direct_documents_answer_as_the_view(store_server, monkeypatch, query):
    async with running(store_server.url) as (app, services):
        lean_run, view_run = await _both_paths(app, services, monkeypatch, query, None, {}, 1)
    assert lean_run[0] == view_run[0]
    assert lean_run[1] == view_run[1]
