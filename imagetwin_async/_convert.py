"""One cattrs converter between the wire format (camelCase JSON) and our models.

Unknown keys are ignored (the API grows: ``aiImageCount`` and ``highestScore`` came later);
a structuring error becomes a ``ResponseFormatError`` with the path of the bad field.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._errors import ResponseFormatError
from ._models import CallbackNotice, ScanOverview, ScanResult, ScanStarted, ScanSummary

__all__ = ["converter", "structure", "unstructure"]

T = TypeVar("T")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _structure_datetime(value: Any, _: type) -> dt.datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 date-time string, got {type(value).__name__}")
    parsed = dt.datetime.fromisoformat(value)
    # The reference stores scan dates in UTC and sends them without an offset.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _structure_date(value: Any, _: type) -> dt.date:
    if not isinstance(value, str):
        raise TypeError(f"expected a YYYY-MM-DD string, got {type(value).__name__}")
    return dt.date.fromisoformat(value)


def _structure_int(value: Any, _: type) -> int:
    if type(value) is int:  # the common case first: these hooks run for every field
        return value
    # JSON has one number type; refuse floats with a fraction and bools rather than truncate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _structure_float(value: Any, _: type) -> float:
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _structure_str(value: Any, _: type) -> str:
    if type(value) is str:
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _structure_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def _make_converter(*, detailed_validation: bool = True) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=False, detailed_validation=detailed_validation)
    conv.register_structure_hook(dt.datetime, _structure_datetime)
    conv.register_unstructure_hook(dt.datetime, lambda d: d.replace(tzinfo=None).isoformat())
    conv.register_structure_hook(dt.date, _structure_date)
    conv.register_unstructure_hook(dt.date, lambda d: d.isoformat())
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    for cls in (ScanStarted, ScanResult, ScanSummary, ScanOverview, CallbackNotice):
        renames: dict[str, Any] = {
            a.name: override(rename=_camel(a.name)) for a in attrs.fields(cls)
        }
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **renames))
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **renames))
    return conv


converter = _make_converter()
# The same hooks without cattrs' detailed validation (which wraps every field in its own
# try/except to collect every error with its path): a third cheaper on every answer read. It
# only ever returns; when it raises, the detailed converter runs again to say what was wrong.
_fast = _make_converter(detailed_validation=False)


def structure(data: Any, cls: type[T], *, endpoint: str | None = None) -> T:
    """Build ``cls`` from decoded JSON, or raise ``ResponseFormatError`` naming the bad field."""
    try:
        return _fast.structure(data, cls)
    except Exception:  # noqa: S110 - any failure: the detailed pass below says which
        pass
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raw = (
            cattrs.transform_error(exc)
            if isinstance(exc, cattrs.BaseValidationError)
            else [f"{exc} @ $"]
        )
        # cattrs reports attribute names; the caller looks at the JSON, which is camelCase.
        details = [(why, _camel_path(path)) for why, _, path in (d.rpartition(" @ ") for d in raw)]
        raise ResponseFormatError(
            f"unexpected {cls.__name__} from the server: "
            + "; ".join(f"{why} at {path}" for why, path in details),
            endpoint=endpoint,
            path=details[0][1] if details else None,
        ) from exc


def _camel_path(path: str) -> str:
    return ".".join(_camel(part) for part in path.split("."))


def unstructure(value: object) -> Any:
    """The wire form (camelCase) of a model: what the emulator and the journal store."""
    return converter.unstructure(value)
