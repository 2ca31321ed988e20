"""Payload encoding (what to send) and decoding (what a handler receives).

Encoding, for MQTT and REST alike: ``bytes``/``bytearray``/``memoryview`` go as they are, ``str`` as
its UTF-8 bytes, and any other value (``dict``, ``list``, numbers, ``bool``, ``None``) as its JSON text.

Decoding: the JSON value when the bytes are JSON, else the ``str`` when they are UTF-8, else the
``bytes``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence, Union

__all__ = ["JsonValue", "Payload", "PublishPayload", "encode_payload", "decode_payload"]

#: A decoded JSON document.
JsonValue = Union[dict[str, "JsonValue"], list["JsonValue"], str, int, float, bool, None]

#: What a message handler receives: decoded JSON, else text, else raw bytes.
Payload = Union[JsonValue, bytes]

#: What :meth:`publish` accepts.
PublishPayload = Union[
    bytes, bytearray, memoryview, str, Mapping[str, Any], Sequence[Any], int, float, bool, None
]


def encode_payload(payload: PublishPayload) -> bytes:
    """The bytes to send for ``payload`` (see the module docstring)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, Mapping):
        return json.dumps(dict(payload), separators=(",", ":")).encode("utf-8")
    if isinstance(payload, Sequence):
        return json.dumps(list(payload), separators=(",", ":")).encode("utf-8")
    return json.dumps(payload).encode("utf-8")


def _reject_constant(name: str) -> JsonValue:
    """``NaN``/``Infinity`` are not JSON: treat such a payload as text."""
    raise ValueError(name)


def decode_payload(data: bytes | bytearray | memoryview) -> Payload:
    """Decode received bytes: JSON value, else UTF-8 text, else the bytes themselves."""
    data = bytes(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    try:
        value: JsonValue = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text
    return value
