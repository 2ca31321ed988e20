"""Query strings as the broker reads them."""

from __future__ import annotations

from typing import Mapping
from urllib.parse import quote


def with_query(path: str, params: Mapping[str, str] | None) -> str:
    """``path`` with ``params`` percent-encoded (a space as ``%20``): the API reads ``+`` as a
    plus sign (the MQTT wildcard of stream filters), never as the space of form encoding."""
    if not params:
        return path
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    return f"{path}?{query}"
