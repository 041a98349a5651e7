"""Structural comparison of two parsed Caffe messages, reporting the first difference.

Values are compared as Caffe reads them: an unset field equals its default
(`lr_mult: 0` and no lr_mult read the same), floats agree to a relative
tolerance, repeated fields must have the same length and order.
"""
from __future__ import annotations

from typing import Iterable, Optional

from google.protobuf.descriptor import FieldDescriptor

REL_TOL = 1e-6


def _floats_close(a: float, b: float, rel: float) -> bool:
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def _show(field: FieldDescriptor, value) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name if value in field.enum_type.values_by_number else str(value)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return "{" + str(value).replace("\n", " ").strip() + "}"
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return f"{value:.7g}"  # float32: 7 significant digits, no 0.3499999940395355
    return repr(value)


def _effective(message, field: FieldDescriptor):
    return getattr(message, field.name)


def message_difference(ours, reference, path: str = "", rel: float = REL_TOL,
                       ignore: Iterable[str] = ()) -> Optional[str]:
    """The first difference between two messages of one type, as
    'field.path: ours=... reference=...', or None when they agree."""
    ignore = set(ignore)
    names = {f.name for f, _ in ours.ListFields()} | {f.name for f, _ in reference.ListFields()}
    for field in sorted((ours.DESCRIPTOR.fields_by_name[n] for n in names), key=lambda f: f.number):
        where = f"{path}.{field.name}" if path else field.name
        if where in ignore:
            continue
        a, b = _effective(ours, field), _effective(reference, field)
        if field.is_repeated:
            if len(a) != len(b):
                return (f"{where}: ours has {len(a)} value(s) {[_show(field, v) for v in a][:8]}, "
                        f"reference {len(b)} {[_show(field, v) for v in b][:8]}")
            for i, (x, y) in enumerate(zip(a, b)):
                found = _value_difference(field, x, y, f"{where}[{i}]", rel, ignore)
                if found:
                    return found
        else:
            found = _value_difference(field, a, b, where, rel, ignore)
            if found:
                return found
    return None


def _value_difference(field, a, b, where, rel, ignore) -> Optional[str]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_difference(a, b, where, rel, ignore)
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        same = _floats_close(a, b, rel)
    else:
        same = a == b
    return None if same else f"{where}: ours={_show(field, a)} reference={_show(field, b)}"


def net_difference(ours, reference, rel: float = REL_TOL, ignore: Iterable[str] = ()) -> Optional[str]:
    """First difference between two NetParameters: net-level fields (but the
    name), then the layers in order, named by index and layer name."""
    ignore = set(ignore) | {"name", "layer"}
    found = message_difference(ours, reference, "", rel, ignore)
    if found:
        return f"net: {found}"
    layer_ignore = set(ignore) - {"name", "layer"}
    for index, (a, b) in enumerate(zip(ours.layer, reference.layer)):
        found = message_difference(a, b, "", rel, layer_ignore)
        if found:
            return f"layer {index} '{b.name}' (ours '{a.name}'): {found}"
    if len(ours.layer) != len(reference.layer):
        longer = ours.layer if len(ours.layer) > len(reference.layer) else reference.layer
        extra = longer[min(len(ours.layer), len(reference.layer))]
        return (f"layer count: ours {len(ours.layer)}, reference {len(reference.layer)} "
                f"(first unmatched: '{extra.name}')")
    return None
