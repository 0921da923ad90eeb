"""Describe a source or destination as plain JSON (class path + constructor arguments) and rebuild it.

A trigger runs in the triggerer, another process: it gets the sensor's source and destination as
``{"class": "<module>.<Class>", "kwargs": {...}}`` and builds them again there. The arguments are read back
from the object's attributes of the same names (every hook and destination of this provider keeps its
constructor arguments as attributes); arguments still at their default are left out.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from datetime import datetime, timedelta
from typing import Any

Spec = dict[str, Any]
_SCALARS = (str, int, float, bool, type(None))


class NotDescribableError(TypeError):
    """An object cannot be rebuilt in the triggerer; the message names the argument and what to do."""


def describe(obj: object) -> Spec:
    """``{"class": ..., "kwargs": ...}`` that :func:`rebuild` turns back into an equal object."""
    cls = type(obj)
    kwargs: dict[str, Any] = {}
    seen: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass) or klass.__module__.startswith("airflow."):
            continue
        for name, param in inspect.signature(klass.__init__).parameters.items():  # type: ignore[misc]
            if name == "self" or name in seen or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            seen.add(name)
            if not hasattr(obj, name):
                if param.default is param.empty:
                    raise NotDescribableError(
                        f"{cls.__qualname__} keeps no attribute {name!r}, so it cannot be rebuilt in the triggerer; "
                        "store each constructor argument under its own name, or use deferrable=False"
                    )
                continue
            value = getattr(obj, name)
            if _is_default(value, param.default):
                continue
            kwargs[name] = _encode(value, f"{cls.__qualname__}.{name}")
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": kwargs}


def rebuild(spec: Spec) -> Any:
    """The object a :func:`describe` spec stands for."""
    module_name, _, class_name = spec["class"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**{name: _decode(value) for name, value in spec["kwargs"].items()})


def _is_default(value: Any, default: Any) -> bool:
    if default is inspect.Parameter.empty:
        return False
    if default is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:  # an argument the constructor fills in when given None, e.g. file_format=FileFormat()
            return bool(value == type(value)())
        except TypeError:
            return False
    try:
        return bool(value == default) and type(value) is type(default)
    except Exception:
        return False


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, timedelta):
        return {"__type__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, datetime):
        return {"__type__": "datetime", "iso": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return [_encode(item, where) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _encode(item, f"{where}[{key!r}]") for key, item in value.items()}
    if dataclasses.is_dataclass(value) or hasattr(value, "__init__"):
        try:
            return {"__type__": "object", **describe(value)}
        except NotDescribableError:
            raise
        except (TypeError, ValueError) as err:
            raise NotDescribableError(f"{where}: {err}") from err
    raise NotDescribableError(f"{where}: a {type(value).__name__} cannot be sent to the triggerer")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("__type__")
    if kind == "timedelta":
        return timedelta(seconds=value["seconds"])
    if kind == "datetime":
        return datetime.fromisoformat(value["iso"])
    if kind == "object":
        return rebuild(value)
    return {key: _decode(item) for key, item in value.items()}
