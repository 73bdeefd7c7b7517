"""The corrections to mongoeco's SQLite engine (cryptovault/db/mongoeco_compat.py)
override private functions of one mongoeco release. An upgrade that changes any of
them must be noticed (the first test fails, naming each function), and until the
layer is adapted the store must fall back to the stock engine, never apply the
corrections to code they were not written for."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from mongoeco.engines import SQLiteEngine

from cryptovault.db import flat_engine, mongoeco_compat


@pytest.fixture
def fresh_check() -> Iterator[None]:
    mongoeco_compat.compat_problems.cache_clear()
    yield
    mongoeco_compat.compat_problems.cache_clear()


def test_the_installed_mongoeco_is_the_one_the_compat_layer_was_written_for(fresh_check):
    problems = mongoeco_compat.compat_problems()
    assert not problems, (
        "mongoeco changed under cryptovault/db/mongoeco_compat.py, so the embedded "
        "store now runs the stock (slow) engine. Read each changed function, adapt the "
        "overrides, then record the new hashes (python -m cryptovault.db.mongoeco_compat):\n"
        + "\n".join(problems)
    )


def test_every_overridden_engine_method_is_pinned():
    corrected = mongoeco_compat._engine_class()
    overridden = {
        name
        for name, value in vars(corrected).items()
        if callable(value) and hasattr(SQLiteEngine, name) and name != "__init__"
    }
    pinned = {
        name.rsplit(".", 1)[1]
        for name in mongoeco_compat.RECORDED_SOURCES
        if name.startswith("mongoeco.engines.sqlite:SQLiteEngine.")
    }
    assert overridden and overridden <= pinned, overridden - pinned


def test_a_changed_mongoeco_function_turns_the_corrections_off(
    fresh_check, monkeypatch, tmp_path, caplog
):
    name = "mongoeco.engines.sqlite:SQLiteEngine._validate_document_against_unique_indexes"
    monkeypatch.setitem(mongoeco_compat.RECORDED_SOURCES, name, "0" * 64)
    with caplog.at_level(logging.WARNING, logger="cryptovault.db.mongoeco_compat"):
        engine = flat_engine(str(tmp_path / "store.sqlite3"))
    assert type(engine) is SQLiteEngine
    assert "_validate_document_against_unique_indexes changed" in caplog.text


def test_another_mongoeco_version_turns_the_corrections_off(
    fresh_check, monkeypatch, tmp_path, caplog
):
    monkeypatch.setattr(mongoeco_compat, "PINNED_VERSION", "4.10.9")
    with caplog.at_level(logging.WARNING, logger="cryptovault.db.mongoeco_compat"):
        engine = flat_engine(str(tmp_path / "store.sqlite3"))
    assert type(engine) is SQLiteEngine
    assert "was written for 4.10.9" in caplog.text


def test_the_pinned_mongoeco_gets_the_corrected_engine(fresh_check, tmp_path):
    engine = flat_engine(str(tmp_path / "store.sqlite3"))
    assert type(engine) is mongoeco_compat._engine_class()


def test_kept_answers_move_towards_the_general_path_on_each_write():
    """What a written document does to a kept answer: a type mismatch or a value that
    breaks a uniform sort type is never missed (a subclass such as Int64, which the
    engine may store tagged, counts as another type)."""
    from bson import Int64

    from cryptovault.db.mongoeco_compat import updated

    assert updated("uniform", "number", {"t": 5}, "t") == "number"
    assert updated("uniform", "number", {"t": True}, "t") is None
    assert updated("uniform", "number", {"t": Int64(5)}, "t") is None
    assert updated("uniform", "number", {}, "t") is None  # missing: not uniform
    assert updated("uniform", "string", {"a": {"b": "x"}}, "a.b") == "string"
    assert updated("uniform", "string", {"a": [{"b": "x"}]}, "a.b") is None
    assert updated("mismatch:string", False, {"k": "x"}, "k") is False
    assert updated("mismatch:string", False, {}, "k") is False  # missing: no mismatch
    assert updated("mismatch:string", False, {"k": None}, "k") is True
    assert updated("mismatch:string", False, {"k": ["x"]}, "k") is True
    assert updated("mismatch:number", False, {"k": Int64(1)}, "k") is True
    assert updated("mismatch:number", True, {"k": 1}, "k") is True  # yes stays yes
    assert updated("array", False, {"k": [1]}, "k") is True


def forgets_while_another_thread_learns(engine: SQLiteEngine) -> list[RuntimeError]:
    """Errors of 300 invalidations of one collection's features while another thread
    adds features of another collection (as the engine's executor threads do), with
    the interpreter switching threads as often as it can."""
    import sys
    import threading

    cache = engine._collection_features_cache
    for i in range(2_000):
        cache[("db", "kept", f"f{i}")] = True
    stop = threading.Event()

    def learn() -> None:
        i = 0
        while not stop.is_set():
            cache[("db", "other", f"g{i % 5_000}")] = False
            i += 1

    errors: list[RuntimeError] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    learner = threading.Thread(target=learn)
    learner.start()
    try:
        for _ in range(300):
            try:
                engine._invalidate_collection_features_cache("db", "written")
            except RuntimeError as error:
                errors.append(error)
    finally:
        stop.set()
        learner.join()
        sys.setswitchinterval(interval)
    assert ("db", "kept", "f0") in cache  # another collection's features stay
    return errors


def forgets_while_a_feature_is_learned(engine: SQLiteEngine) -> None:
    """One invalidation during which a feature of another collection is added at a
    set point of the walk over the cache (what an executor thread does at a thread
    switch), deterministically: a cached key's database name adds it when compared."""
    cache = engine._collection_features_cache
    added: list[bool] = []

    class Learning(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            if not added:
                added.append(True)
                cache[("db", "other", "learned meanwhile")] = False
            return str.__eq__(self, other)

    cache[(Learning("db"), "kept", "f")] = True
    cache[("db", "written", "f")] = True
    engine._invalidate_collection_features_cache("db", "written")
    assert added and ("db", "written", "f") not in cache
    assert ("db", "other", "learned meanwhile") in cache


def test_forgetting_a_collections_features_survives_other_threads_learning(tmp_path):
    """Stock mongoeco failed a write under load with "dictionary changed size during
    iteration": it iterates the features cache while executor threads add to it."""
    corrected = flat_engine(str(tmp_path / "corrected.sqlite3"))
    stock = SQLiteEngine(str(tmp_path / "stock.sqlite3"))
    assert type(corrected) is not SQLiteEngine
    forgets_while_a_feature_is_learned(corrected)
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        forgets_while_a_feature_is_learned(stock)  # the race, at a set point
    # And with a real thread adding as often as the interpreter switches threads.
    assert forgets_while_another_thread_learns(corrected) == []
