"""JSON ⇄ protobuf with the proto3 JSON mapping; input that does not fit names its field.

`google.protobuf.json_format` does the conversion; before it runs, the body is
walked against the message descriptor so an unknown field or a value of the
wrong type is reported at its exact path (`project.type`, `usage[2].model`)
rather than as one opaque parse error. Job events take `event_json`'s direct
path: the same proto3 JSON, written without json_format's walk — text deltas, the
bulk of every stream, by hand; the other small kinds (queued, stage, progress,
failover, cancelled) from a plan of their fields made once per message type.
Only `completed` and `failed` (nested messages, `google.protobuf.Any`) still go
through json_format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring
from typing import Any, Final, TypeVar, cast

from aiohttp import web
from google.protobuf import json_format, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from scriptgen.v1 import generation_pb2

from gateway.errors import ApiError, Reason
from gateway.inputs import is_text

_M = TypeVar("_M", bound=Message)

# Well-known types have their own JSON forms (strings for Timestamp, FieldMask,
# Duration …); json_format checks those, so the walk treats them as leaves.
_WELL_KNOWN_PREFIX = "google.protobuf."


def to_json(message: Message) -> dict[str, Any]:
    """A message as proto3 JSON (camelCase), with every field a client may rely on."""
    return dict(json_format.MessageToDict(message, always_print_fields_with_no_presence=True))


def dumps(value: Any) -> str:
    """Compact one-line JSON; non-ASCII script text stays readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def event_json(event: generation_pb2.GenerationEvent) -> str:
    """A job event as one line of proto3 JSON: `dumps(MessageToDict(event))`, exactly.

    Text deltas are written directly (about ten times faster than walking the
    descriptors); the other kinds of scalar fields from their plans (`_kind_json`);
    `completed` and `failed` go through json_format.
    """
    kind = event.WhichOneof("kind")
    if kind != "text_delta":
        body = None if kind is None else _kind_json(getattr(event, kind))
        if body is None or kind is None:
            return dumps(json_format.MessageToDict(event))
        return _event_head(event) + f'"{_JSON_NAMES[kind]}":{body}}}'
    # Field order, omitted defaults and int64-as-string follow MessageToDict.
    out = _event_head(event)
    delta = event.text_delta
    if delta.text:
        out += '"textDelta":{"text":' + encode_basestring(delta.text)
        return out + (f',"offset":"{delta.offset}"}}}}' if delta.offset else "}}")
    return out + (
        f'"textDelta":{{"offset":"{delta.offset}"}}}}' if delta.offset else '"textDelta":{}}'
    )


def _event_head(event: generation_pb2.GenerationEvent) -> str:
    """`{` and the event's common fields, each followed by a comma."""
    out = "{"
    if event.generation:
        out += '"generation":' + encode_basestring(event.generation) + ","
    if event.sequence:
        out += f'"sequence":"{event.sequence}",'
    if event.HasField("time"):
        out += '"time":"' + _timestamp_json(event.time) + '",'
    return out


_JSON_NAMES: Final = {
    field.name: field.json_name
    for field in generation_pb2.GenerationEvent.DESCRIPTOR.oneofs_by_name["kind"].fields
}
_INT64_TYPES: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_INT32_TYPES: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
#: How json_format prints one value of a field; None: in a way this path leaves to it.
_Writer = Callable[[Any], str | None]
#: A field as json_format prints it: (attribute, `"jsonName":`, has presence, repeated, writer).
_Field = tuple[str, str, bool, bool, _Writer]


def _string(value: Any) -> str | None:
    return encode_basestring(value)


def _int64(value: Any) -> str | None:
    return f'"{value}"'


def _int32(value: Any) -> str | None:
    return str(value)


def _bool(value: Any) -> str | None:
    return "true" if value else "false"


def _double(value: Any) -> str | None:
    # json_format writes NaN and the infinities as strings: left to it.
    return float.__repr__(value) if math.isfinite(value) else None


def _enum_writer(field: FieldDescriptor) -> _Writer:
    enum_type = cast(EnumDescriptor, field.enum_type)
    names = {
        number: encode_basestring(value.name)
        for number, value in enum_type.values_by_number.items()
    }

    def write(value: Any) -> str | None:
        return names.get(value, str(value))  # an unknown number is printed as the number

    return write


def _writer(field: FieldDescriptor) -> _Writer | None:
    """How json_format prints a scalar field's value; None for what it does otherwise."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string
    if field.type in _INT64_TYPES:
        return _int64
    if field.type in _INT32_TYPES:
        return _int32
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _bool
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return _double
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum_writer(field)
    return None  # messages, bytes, 32-bit floats: json_format's own forms


def _plan(descriptor: Descriptor) -> list[_Field] | None:
    """The fields of a message of scalars in json_format's order; None if any is not one."""
    plan: list[_Field] = []
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        writer = _writer(field)
        if writer is None:
            return None
        plan.append(
            (field.name, f'"{field.json_name}":', field.has_presence, field.is_repeated, writer)
        )
    return plan


_PLANS: dict[str, list[_Field] | None] = {}


def _kind_json(message: Message) -> str | None:
    """A small event kind's proto3 JSON object, as MessageToDict prints it; None when the
    message has fields this path does not write (json_format then does)."""
    name = message.DESCRIPTOR.full_name
    try:
        plan = _PLANS[name]
    except KeyError:
        plan = _PLANS[name] = _plan(cast(Descriptor, message.DESCRIPTOR))
    if plan is None:
        return None
    parts: list[str] = []
    for attribute, key, presence, repeated, write in plan:
        if presence:
            if not message.HasField(attribute):
                continue
            value = getattr(message, attribute)
        else:
            value = getattr(message, attribute)
            if not value:
                if value.__class__ is float and math.copysign(1.0, value) < 0:
                    return None  # -0.0 is set, not the default: json_format's own
                continue  # a default (or empty list) is left out, as json_format does
        if repeated:
            items = [write(item) for item in value]
            if None in items:
                return None
            parts.append(key + "[" + ",".join(cast(list[str], items)) + "]")
        else:
            written = write(value)
            if written is None:
                return None
            parts.append(key + written)
    return "{" + ",".join(parts) + "}"


class _SecondsCache:
    """The date-and-time part of the last second formatted; events of one second share it."""

    seconds: int | None = None
    text = ""


def _timestamp_json(stamp: timestamp_pb2.Timestamp) -> str:
    """`stamp.ToJsonString()`, with the date part computed once per second."""
    nanos = stamp.nanos
    if not 0 <= nanos < 1_000_000_000:
        return stamp.ToJsonString()  # raises as json_format would
    seconds = stamp.seconds
    if seconds != _SecondsCache.seconds:
        _SecondsCache.text = timestamp_pb2.Timestamp(seconds=seconds).ToJsonString()[:-1]
        _SecondsCache.seconds = seconds
    prefix = _SecondsCache.text
    if nanos == 0:
        return prefix + "Z"
    if nanos % 1_000_000 == 0:
        return f"{prefix}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{prefix}.{nanos // 1000:06d}Z"
    return f"{prefix}.{nanos:09d}Z"


def field_names(body: Mapping[str, Any], descriptor: Descriptor) -> list[str]:
    """The proto field names of the JSON keys in `body` that name a field."""
    names: list[str] = []
    for key in body:
        field = _field(descriptor, key)
        if field is not None:
            names.append(field.name)
    return names


def parse_message(body: Mapping[str, Any], message: _M, *, path: str = "") -> _M:
    """Fill `message` from a JSON object; `path` prefixes field names in violations."""
    if _fill_plain(body, message):
        return message
    return parse_walked(body, message, path=path)


def parse_walked(body: Mapping[str, Any], message: _M, *, path: str = "") -> _M:
    """`parse_message` for any body: walked for violations, then json_format."""
    violations: dict[str, str] = {}
    _walk(body, cast(Descriptor, message.DESCRIPTOR), path, violations)
    if violations:
        raise ApiError.invalid(
            Reason.INVALID_FIELD, "The request body has invalid fields.", violations
        )
    try:
        json_format.ParseDict(dict(body), message)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        # The walk catches what it can name; what is left is reported at the body's root.
        raise ApiError.invalid(
            Reason.INVALID_FIELD, "The request body is invalid.", {path or "body": str(error)}
        ) from None
    return message


#: Per message type, its plain fields by JSON and proto name: singular strings and bools
#: outside any oneof, whose JSON value is set as it is (see `_fill_plain`).
_PLAIN_FIELDS: dict[Descriptor, dict[str, tuple[str, type]]] = {}
_PLAIN_TYPES: Final = {FieldDescriptor.TYPE_STRING: str, FieldDescriptor.TYPE_BOOL: bool}


def _plain_fields(descriptor: Descriptor) -> dict[str, tuple[str, type]] | None:
    """The plain fields of a message type; None for a well-known type (wrappers, Any,
    Timestamp …), whose JSON forms are its own (json_format refuses even `{}` for some)."""
    if descriptor.full_name.startswith(_WELL_KNOWN_PREFIX):
        return None
    plain = _PLAIN_FIELDS.get(descriptor)
    if plain is None:
        plain = {}
        kinds = {field.name: _plain_kind(field) for field in descriptor.fields}
        for field in descriptor.fields:
            if (kind := kinds[field.name]) is not None:
                plain[field.name] = (field.name, kind)
        # json_format looks a key up by JSON name first: a JSON name that is another
        # field's proto name names the field whose JSON name it is.
        for field in descriptor.fields:
            if (kind := kinds[field.name]) is not None:
                plain[field.json_name] = (field.name, kind)
            else:
                plain.pop(field.json_name, None)
        _PLAIN_FIELDS[descriptor] = plain
    return plain


def _plain_kind(field: FieldDescriptor) -> type | None:
    kind = _PLAIN_TYPES.get(field.type)
    return None if field.is_repeated or field.containing_oneof is not None else kind


def _fill_plain(body: Mapping[str, Any], message: Message) -> bool:
    """Fill `message` when every key of `body` names a plain field once, with a value of its
    type (a string that is text, or a bool): what json_format would do, without its walk
    (a twentieth of the time; most request bodies are such). False, with `message`
    untouched, for any other body: the walked path then fills it or names what is wrong."""
    plain = _plain_fields(cast(Descriptor, message.DESCRIPTOR))
    if plain is None:
        return False
    values: dict[str, str | bool] = {}
    for key, value in body.items():
        found = plain.get(key)
        if found is None or found[0] in values:
            return False
        # The exact type: a str or bool subclass, or an int for a bool, goes the walked path.
        if found[1] is str:
            if value.__class__ is not str or not is_text(value):
                return False  # not a string, or not text (a lone surrogate)
        elif value.__class__ is not bool:
            return False
        values[found[0]] = value
    for name, field_value in values.items():
        setattr(message, name, field_value)
    return True


def _field(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    for field in descriptor.fields:
        if key in (field.json_name, field.name):
            return field
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _walk(
    body: Mapping[str, Any], descriptor: Descriptor, path: str, violations: dict[str, str]
) -> None:
    for key, value in body.items():
        field = _field(descriptor, key)
        if field is None:
            violations[_join(path, key)] = f"Unknown field {key!r} in {descriptor.name}."
            continue
        where = _join(path, field.name)
        if _is_nested_message(field):
            _walk_message_field(field, value, where, violations)
        elif field.type == FieldDescriptor.TYPE_ENUM and not _is_enum_value(value, field):
            # json_format truncates 3.5 to 3; the proto3 JSON mapping allows a name or an integer.
            violations[where] = "Must be an enum value name or integer."
        else:
            _check_leaf(descriptor, key, value, where, violations)


def _is_enum_value(value: Any, field: FieldDescriptor) -> bool:
    if field.is_repeated:
        return isinstance(value, list) and all(_is_enum_scalar(item) for item in value)
    return value is None or _is_enum_scalar(value)


def _is_enum_scalar(value: Any) -> bool:
    if isinstance(value, str):
        # A lone surrogate (JSON's "\ud800") names no value, and json_format's lookup of
        # one fails with SystemError rather than ParseError.
        return is_text(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _is_nested_message(field: FieldDescriptor) -> bool:
    nested = field.message_type
    if field.type != FieldDescriptor.TYPE_MESSAGE or nested is None:
        return False
    return not nested.GetOptions().map_entry and not nested.full_name.startswith(_WELL_KNOWN_PREFIX)


def _walk_message_field(
    field: FieldDescriptor, value: Any, where: str, violations: dict[str, str]
) -> None:
    nested = field.message_type
    if value is None or nested is None:
        return
    if field.is_repeated:
        if not isinstance(value, list):
            violations[where] = "Must be an array."
            return
        for index, item in enumerate(value):
            if isinstance(item, dict):
                _walk(item, nested, f"{where}[{index}]", violations)
            else:
                violations[f"{where}[{index}]"] = "Must be an object."
    elif isinstance(value, dict):
        _walk(value, nested, where, violations)
    else:
        violations[where] = "Must be an object."


def _check_leaf(
    descriptor: Descriptor, key: str, value: Any, where: str, violations: dict[str, str]
) -> None:
    probe = message_factory.GetMessageClass(descriptor)()
    try:
        json_format.ParseDict({key: value}, probe)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        violations[where] = _describe(error)


def _describe(error: Exception) -> str:
    # json_format prefixes its messages with "Failed to parse <name> field: ";
    # the violation already names the field.
    text = str(error)
    marker = " field: "
    return (
        text.split(marker, 1)[1] if text.startswith("Failed to parse") and marker in text else text
    )


def json_response(
    reply: Message | Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An HTTP answer whose body is `reply` as proto3 JSON."""
    body = to_json(reply) if isinstance(reply, Message) else reply
    return web.json_response(body, status=status, headers=headers, dumps=dumps)
