"""Bounds on everything a caller sends, checked before any of it reaches the database.

``check_message`` walks any request message by its descriptor, so a field added to the contract
is covered without a change here: every string is at most a length its field allows and holds no
NUL byte (PostgreSQL refuses both, and the row would never be stored), every floating-point
number is finite, and every repeated field holds at most a count its field allows (the limits
are in hilfarm/wire_limits.py, which the agent keeps to when it builds a report). A broken
bound raises InvalidArgument naming the field, the limit and the value's size. Limits on what a
job may ask for (runs, durations, attempts, jobs per submit) are checked where a run is planned
(submission.py), with the numbers of hilfarm/wire_limits.py that the agent keeps to as well.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Dict, Tuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from hilfarm import wire_limits

from .errors import InvalidArgument

max_chars = wire_limits.max_chars
max_items = wire_limits.max_items


def _is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5.28; older ones have only label
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _check_string(field: FieldDescriptor, value: str, path: str) -> None:
    limit = max_chars(field)
    if len(value) > limit:
        raise InvalidArgument(f"{path} is {len(value)} characters long; the limit is {limit}")
    if "\x00" in value:
        raise InvalidArgument(f"{path} contains a NUL character, which no text field may hold")


def _check_scalar(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == field.TYPE_STRING:
        _check_string(field, value, path)
    elif field.cpp_type in (field.CPPTYPE_DOUBLE, field.CPPTYPE_FLOAT) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        raise InvalidArgument(f"{path} is {shown}; it must be a finite number")


def _set_fields(msg: Message, has_bytes: bool) -> Any:
    """``msg.ListFields()``, without reading bytes fields: an upload chunk's megabyte of data
    is bounded by the message size, and copying it out only to look past it costs time."""
    if not has_bytes:
        return msg.ListFields()
    found = []
    for field in msg.DESCRIPTOR.fields:
        if field.type == field.TYPE_BYTES:
            continue
        if _is_repeated(field):
            value = getattr(msg, field.name)
            if len(value):
                found.append((field, value))
        elif field.message_type is not None or field.has_presence:
            if msg.HasField(field.name):
                found.append((field, getattr(msg, field.name)))
        else:
            value = getattr(msg, field.name)
            if value != field.default_value:
                found.append((field, value))
    return found


# What check_message does with a field, by its kind.
_MAP, _REPEATED_MESSAGE, _REPEATED_CHECKED, _REPEATED_OTHER, _MESSAGE, _STRING, _FLOAT, _UNCHECKED = range(8)


@functools.lru_cache(maxsize=None)
def _plan(descriptor: Descriptor) -> Tuple[bool, Dict[int, Tuple[int, int]]]:
    """How to check a message of ``descriptor``, worked out once per message type (every call's
    request is checked, and reading a descriptor's options and limits costs more than the check):
    whether it has bytes fields, and per field number its kind and limit (items of a repeated
    field or map, characters of a string)."""
    kinds: Dict[int, Tuple[int, int]] = {}
    for field in descriptor.fields:
        checked_scalar = field.type == field.TYPE_STRING or field.cpp_type in (field.CPPTYPE_DOUBLE, field.CPPTYPE_FLOAT)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            kinds[field.number] = (_MAP, max_items(field))
        elif _is_repeated(field):
            kind = (_REPEATED_MESSAGE if field.message_type is not None
                    else _REPEATED_CHECKED if checked_scalar else _REPEATED_OTHER)
            kinds[field.number] = (kind, max_items(field))
        elif field.message_type is not None:
            kinds[field.number] = (_MESSAGE, 0)
        elif field.type == field.TYPE_STRING:
            kinds[field.number] = (_STRING, max_chars(field))
        else:
            kinds[field.number] = (_FLOAT if checked_scalar else _UNCHECKED, 0)
    return any(f.type == f.TYPE_BYTES for f in descriptor.fields), kinds


def check_message(msg: Message, path: str = "") -> None:
    """Raise InvalidArgument for the first field of ``msg`` (recursively) out of bounds."""
    prefix = f"{path}." if path else ""
    has_bytes, kinds = _plan(msg.DESCRIPTOR)
    for field, value in _set_fields(msg, has_bytes):
        kind, limit = kinds[field.number]
        if kind == _UNCHECKED:
            continue
        if kind == _STRING:
            if len(value) > limit or "\x00" in value:
                _check_string(field, value, prefix + field.name)
        elif kind == _FLOAT:
            _check_scalar(field, value, prefix + field.name)
        elif kind == _MESSAGE:
            check_message(value, prefix + field.name)
        elif len(value) > limit:
            noun = "entries" if kind == _MAP else "items"
            raise InvalidArgument(f"{prefix + field.name} has {len(value)} {noun}; the limit is {limit}")
        elif kind == _MAP:
            where = prefix + field.name
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for k, v in value.items():
                _check_scalar(key_field, k, f"{where} key")
                if value_field.message_type is not None:
                    check_message(v, f"{where}[{k}]")
                else:
                    _check_scalar(value_field, v, f"{where}[{k}]")
        elif kind == _REPEATED_MESSAGE:
            for i, item in enumerate(value):
                check_message(item, f"{prefix + field.name}[{i}]")
        elif kind == _REPEATED_CHECKED:
            for i, item in enumerate(value):
                _check_scalar(field, item, f"{prefix + field.name}[{i}]")
