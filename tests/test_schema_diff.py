"""`cryptovault schema-diff` (run by `make schema-check`, hence CI): a schema change
that breaks clients fails unless a deprecation announced it; nothing to compare with
passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptovault.schema.compat import dangerous_changes, unannounced_breaking_changes

ROOT = Path(__file__).resolve().parent.parent

OLD = """
type Query { order(id: ID!): Order  orders(first: Int, symbol: String): [Order!]! }
type Order { id: ID! status: String! side: Side! }
enum Side { BUY SELL }
"""
DEPRECATED = """
type Query { order(id: ID!): Order
  orders(first: Int, symbol: String @deprecated(reason: "gone")): [Order!]! }
type Order { id: ID! status: String! @deprecated(reason: "Use state.") state: State! side: Side! }
enum Side { BUY SELL @deprecated(reason: "no more selling") }
enum State { OPEN DONE }
"""


def test_removing_a_field_that_was_not_deprecated_breaks():
    new = OLD.replace("status: String! ", "")
    assert unannounced_breaking_changes(OLD, new) == ["Field Order.status was removed."]


def test_changing_a_string_field_to_an_enum_breaks():
    new = OLD.replace("status: String!", "status: Side!")
    assert unannounced_breaking_changes(OLD, new) == [
        "Field Order.status changed type from String! to Side!."
    ]


def test_deprecating_and_adding_is_safe_and_later_removal_of_the_deprecated_passes():
    assert unannounced_breaking_changes(OLD, DEPRECATED) == []
    removed = (
        DEPRECATED.replace('status: String! @deprecated(reason: "Use state.") ', "")
        .replace(', symbol: String @deprecated(reason: "gone")', "")
        .replace(' SELL @deprecated(reason: "no more selling")', "")
    )
    assert unannounced_breaking_changes(DEPRECATED, removed) == []
    # ... but not the fields that were never deprecated.
    assert unannounced_breaking_changes(DEPRECATED, removed.replace("side: Side! ", "")) == [
        "Field Order.side was removed."
    ]


def test_a_removed_type_passes_only_when_everything_using_it_was_deprecated():
    old = OLD + "type Extra { x: Int }\nextend type Query { extra: Extra }\n"
    gone = OLD
    assert unannounced_breaking_changes(old, gone) == [
        "Extra was removed.",
        "Field Query.extra was removed.",
    ]
    announced = old.replace("extra: Extra", 'extra: Extra @deprecated(reason: "x")')
    assert unannounced_breaking_changes(announced, gone) == []


def test_a_new_enum_value_is_only_dangerous():
    new = OLD.replace("enum Side { BUY SELL }", "enum Side { BUY SELL SHORT }")
    assert unannounced_breaking_changes(OLD, new) == []
    assert dangerous_changes(OLD, new) == ["Enum value Side.SHORT was added."]


def run_diff(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cryptovault", "schema-diff", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_the_command_compares_with_the_previous_commit_and_passes_without_one(tmp_path):
    schema = tmp_path / "schema.graphql"
    schema.write_text(OLD)
    first = run_diff(tmp_path)  # not a git checkout
    assert first.returncode == 0 and "nothing to check" in first.stdout
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "schema.graphql")
    git(tmp_path, "commit", "-qm", "one")
    only = run_diff(tmp_path)  # a first commit: nothing before it
    assert only.returncode == 0 and "nothing to check" in only.stdout
    schema.write_text(DEPRECATED)
    git(tmp_path, "commit", "-qam", "deprecate")
    assert run_diff(tmp_path).returncode == 0
    schema.write_text(DEPRECATED.replace("side: Side! ", ""))
    git(tmp_path, "commit", "-qam", "remove")
    broken = run_diff(tmp_path)
    assert broken.returncode == 1
    assert "BREAKING: Field Order.side was removed." in broken.stderr
    assert run_diff(tmp_path, "--old", str(schema)).returncode == 0
    assert run_diff(tmp_path, "--base", "HEAD~2").returncode == 1
