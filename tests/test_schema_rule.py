"""The schema rule, generatively: whenever it widens two column types to one, every value of either type is
held by the widened type exactly (Arrow's safe cast there and back gives the same value), or the value checks
refuse it by name (nanoseconds with digits below the microseconds a column keeps; an integer past 2**53 into a
double).

Values lie in the range both types hold: a nanosecond timestamp holds 1677 to 2262 only."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.destinations.sql.guards import checks_for
from airflow_cdc_provider.exceptions import SchemaChangeError
from airflow_cdc_provider.schema import widened_type
from tests.typegen import TYPE_PAIRS, canonical_arrow, value_strategy


@st.composite
def pairs_with_values(draw: st.DrawFn) -> tuple[pa.DataType, pa.DataType, list[Any], list[Any]]:
    """Two types (drawn both ways round) with values of each."""
    first, second = draw(TYPE_PAIRS)
    if draw(st.booleans()):
        first, second = second, first
    return (
        first,
        second,
        draw(st.lists(value_strategy(first, second), max_size=4)),
        draw(st.lists(value_strategy(second, first), max_size=4)),
    )


def _held(values: list[Any], kind: pa.DataType, widened: pa.DataType) -> bool:
    """The values survive the widened type, or the check of values landing in it refuses them."""
    array = pa.array(values, kind)
    check = checks_for(pa.schema([pa.field("c", kind)]), pa.schema([pa.field("c", widened)])).get("c")
    if check is not None:
        try:
            check(array, "file", 0)
        except SchemaChangeError:
            return True
    return canonical_arrow(array.cast(widened).cast(kind), kind) == canonical_arrow(array, kind)


@settings(max_examples=300, deadline=None)
@given(example=pairs_with_values())
def test_a_widened_type_holds_every_value_of_both(
    example: tuple[pa.DataType, pa.DataType, list[Any], list[Any]],
) -> None:
    old, new, old_values, new_values = example
    widened = widened_type(old, new)
    assert widened is not None, f"{old} and {new} have a type holding both"
    assert _held(old_values, old, widened), f"{old} -> {widened} changes a value of {old_values}"
    assert _held(new_values, new, widened), f"{new} -> {widened} changes a value of {new_values}"
