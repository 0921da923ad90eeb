"""A source or destination as plain JSON (class path + constructor arguments), and back.

A description is what Airflow stores and shows of a source or destination: the serialized DAG and the Rendered
Templates view (through :meth:`Describable.serialize`), a mapped task's expand input, a deferred sensor's trigger
row (rebuilt in the triggerer). So it names the bucket, prefix, table and connection id, changes when they change,
and never holds a secret:

* :func:`describe` gives the form to rebuild from; it refuses an object holding a secret passed directly
  (``storage_options={"AWS_SECRET_ACCESS_KEY": ...}``), since Airflow would store that description: the remedy is
  the connection (``delta_conn_id``, the official providers' connections), which the rebuilt object reads itself;
* :meth:`Describable.serialize` gives the form to show, each secret replaced by ``***``.

The arguments are read back from the object's attributes of the same names (every hook and destination of this
provider keeps its constructor arguments as attributes); arguments still at their default are left out, except
connection ids, which are always named.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from datetime import datetime, timedelta
from typing import Any

from airflow_cdc_provider import secrets
from airflow_cdc_provider.exceptions import NotDescribableError, SecretInDescriptionError

Spec = dict[str, Any]
_SCALARS = (str, int, float, bool, type(None))


class Describable:
    """Mixin of every source and destination: Airflow shows and serializes it as its description.

    Airflow's serializer calls ``serialize()`` on an object in ``template_fields`` (the serialized DAG, Rendered
    Templates); older Airflow versions use ``str()``, which gives the same description as Python call syntax.
    """

    def serialize(self) -> Spec:
        """The description with every secret replaced by ``***``: what Airflow may store and show."""
        return _describe(self, redact=True)

    def __repr__(self) -> str:
        try:
            return _as_call(self.serialize())
        except NotDescribableError:  # a subclass that keeps an argument under another name
            return object.__repr__(self)


def describe(obj: object) -> Spec:
    """``{"class": ..., "kwargs": ...}`` that :func:`rebuild` turns back into an equal object.

    :param obj: a source or destination (or an argument of one, e.g. a ``FileFormat``).
    :raises SecretInDescriptionError: when ``obj`` holds a secret passed directly rather than through a connection.
    """
    return _describe(obj, redact=False)


def rebuild(spec: Spec) -> Any:
    """The object a :func:`describe` spec stands for.

    :param spec: ``{"class": "<module>.<Class>", "kwargs": {...}}``.
    """
    module_name, _, class_name = spec["class"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    kwargs = {name: _decode(value) for name, value in spec["kwargs"].items()}
    for name, value in kwargs.items():
        for where, secret in secrets.secret_values(name, value):
            if secrets.PLACEHOLDER in secret:
                raise NotDescribableError(
                    f"{class_name}.{where} was redacted ({secrets.PLACEHOLDER}): a description shown by Airflow "
                    "cannot be rebuilt with its secrets; keep them in the connection"
                )
    return cls(**kwargs)


def _describe(obj: object, *, redact: bool) -> Spec:
    cls = type(obj)
    kwargs: dict[str, Any] = {}
    for name, param in _constructor_parameters(cls):
        if not hasattr(obj, name):
            if param.default is param.empty:
                raise NotDescribableError(
                    f"{cls.__qualname__} keeps no attribute {name!r}, so it cannot be described or rebuilt; "
                    "store each constructor argument under its own name"
                )
            continue
        value = getattr(obj, name)
        if _is_default(value, param.default) and not (name.endswith("_conn_id") and value is not None):
            continue  # at its default; a connection used is always named, to be seen in the UI
        found = next(secrets.secret_values(name, value), None)
        if found is not None and not redact:
            raise SecretInDescriptionError(
                f"{cls.__qualname__}.{found[0]} holds a secret passed directly, and Airflow would store this "
                "description (a mapped task's input, a deferred sensor's trigger): keep the secret in an Airflow "
                "connection instead (e.g. delta_conn_id= for Delta storage options, the official provider's "
                "connection for the others), which the rebuilt object reads itself"
            )
        if redact:
            value = secrets.redacted(name, value)
        kwargs[name] = _encode(value, f"{cls.__qualname__}.{name}", redact)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": kwargs}


def _constructor_parameters(cls: type) -> list[tuple[str, inspect.Parameter]]:
    """Named constructor parameters of ``cls`` and its bases of this provider (Airflow's own are left out)."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass) or klass.__module__.startswith("airflow."):
            continue
        for name, param in inspect.signature(klass.__init__).parameters.items():  # type: ignore[misc]
            if name != "self" and name not in found and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                found[name] = param
    return list(found.items())


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


def _encode(value: Any, where: str, redact: bool) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, timedelta):
        return {"__type__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, datetime):
        return {"__type__": "datetime", "iso": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return [_encode(item, where, redact) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _encode(item, f"{where}[{key!r}]", redact) for key, item in value.items()}
    if dataclasses.is_dataclass(value) or hasattr(value, "__init__"):
        try:
            return {"__type__": "object", **_describe(value, redact=redact)}
        except NotDescribableError:
            raise
        except (TypeError, ValueError) as err:
            raise NotDescribableError(f"{where}: {err}") from err
    raise NotDescribableError(f"{where}: a {type(value).__name__} cannot be described")


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


def _as_call(spec: Spec) -> str:
    """A description as Python call syntax: ``S3ChangeFeedHook(bucket='b', prefix='p/')``."""
    arguments = ", ".join(f"{name}={_call_value(value)}" for name, value in spec["kwargs"].items())
    return f"{spec['class'].rpartition('.')[2]}({arguments})"


def _call_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_call_value(item) for item in value) + "]"
    if isinstance(value, dict):
        kind = value.get("__type__")
        if kind == "object":
            return _as_call(value)
        if kind == "timedelta":
            return f"timedelta(seconds={value['seconds']:g})"
        if kind == "datetime":
            return f"datetime.fromisoformat({value['iso']!r})"
        return "{" + ", ".join(f"{key!r}: {_call_value(item)}" for key, item in value.items()) + "}"
    return repr(value)
