"""Run an operator's ``execute`` in the test process with the little of a task context it reads.

Faster than ``dag.test()`` (no metadata database, no DAG file) where a test is about what the operator does
against real servers, not about Airflow's scheduling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseOperator


@dataclass
class OutletEvent:
    """What a task may set on ``context["outlet_events"][asset_or_alias]``."""

    extra: dict[str, Any] = field(default_factory=dict)
    added: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    def add(self, asset: Any, extra: dict[str, Any] | None = None) -> None:
        self.added.append((asset, extra or {}))


class OutletEvents(dict[Any, OutletEvent]):
    def __missing__(self, key: Any) -> OutletEvent:
        self[key] = OutletEvent()
        return self[key]


def execute(operator: BaseOperator, params: dict[str, Any] | None = None) -> tuple[Any, OutletEvents]:
    """``operator.execute`` with ``params`` and ``outlet_events``; returns its result and the outlet events."""
    events = OutletEvents()
    context: Any = {"params": params or {}, "outlet_events": events}
    return operator.execute(context), events
