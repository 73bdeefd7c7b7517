"""Scalars: `Decimal` travels as a string so no client ever rounds money through a
float; `DateTime` is ISO 8601 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import strawberry
from graphql import IntValueNode, StringValueNode, ValueNode

MAX_DIGITS = 40


def parse_decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("Decimal values must be sent as strings, e.g. \"0.015\"")
    text = str(value).strip()
    if len(text) > MAX_DIGITS + 2:
        raise ValueError(f"Decimal values are limited to {MAX_DIGITS} digits")
    try:
        result = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a decimal number") from None
    if not result.is_finite():
        raise ValueError("Decimal values must be finite numbers")
    return result


def parse_decimal_literal(node: ValueNode, _variables: object = None) -> Decimal:
    if isinstance(node, (StringValueNode, IntValueNode)):
        return parse_decimal(node.value)
    raise ValueError("Decimal values must be sent as strings, e.g. \"0.015\"")


def serialize_decimal(value: Decimal) -> str:
    # Fixed-point notation: "0.00000100", never "1.00E-6".
    return format(value, "f")


DecimalScalar = strawberry.scalar(
    name="Decimal",
    description='An exact decimal number, sent and received as a string (e.g. "0.015").',
    serialize=serialize_decimal,
    parse_value=parse_decimal,
    parse_literal=parse_decimal_literal,
)


def serialize_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime values must be ISO 8601 strings")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise ValueError("DateTime values must include a time zone (e.g. Z)")
    return parsed.astimezone(UTC)


DateTimeScalar = strawberry.scalar(
    name="DateTime",
    description="An ISO 8601 date-time in UTC, e.g. 2026-01-31T12:00:00Z.",
    serialize=serialize_datetime,
    parse_value=parse_datetime,
)

SCALAR_MAP = {Decimal: DecimalScalar, datetime: DateTimeScalar}
