"""Reading what a DAG run was given: flags from conf, and whether an argument is still a template."""

from __future__ import annotations

from typing import Any

from airflow_cdc_provider.describe import Describable
from airflow_cdc_provider.exceptions import InvalidParamError

_TRUE = ("true", "1")
_FALSE = ("false", "0")
_TEMPLATE_MARKS = ("{{", "{%")


def read_flag(value: Any, name: str) -> bool:
    """A boolean param as meant: ``True``/``False``, or ``"true"``/``"false"``/``"1"``/``"0"`` (any case, spaces
    around allowed), as a conf without a typed param delivers them; ``None`` is false.

    :param value: the param's value.
    :param name: the param's name, for the error.
    :raises InvalidParamError: for anything else (``"yes"``, ``2``, ``""``), before anything is read or applied.
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidParamError(
        f'param {name!r} is {value!r}; give true or false (a JSON boolean, or the strings "true", "false", '
        f'"1", "0"), e.g. {{"{name}": true}} in the run\'s conf'
    )


def is_templated(obj: Describable) -> bool:
    """Whether any argument of a source or destination is still a Jinja template (rendered when the task runs)."""
    return _holds_template(obj.serialize())


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return any(mark in value for mark in _TEMPLATE_MARKS)
    if isinstance(value, dict):
        return any(_holds_template(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_template(item) for item in value)
    return False
