"""A GraphQL request's parameters over HTTP: a JSON body or a GET's query string, decoded and
checked the same way for every path that answers them (api/view.py, api/streams.py)."""

import json
import re
from typing import Any

import orjson
from starlette.requests import Request

# The members of a request that must have a type, and what each must be.
FIELD_KINDS = (
    ("query", "a string"),
    ("variables", "an object"),
    ("extensions", "an object"),
    ("operationName", "a string"),
)
# A GraphQL name (the spec's Name token).
NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


def decode_json(data: str | bytes) -> object:
    """JSON with every failure a JSONDecodeError (a 400, or a close with 4400): json.loads also
    raises UnicodeDecodeError, RecursionError past ~1,000 levels and ValueError for integers of
    more than 4,300 digits, which became 500s and dropped sockets."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # What orjson refuses and json takes: lone surrogates in \\u escapes (refused later,
    # naming the field), integers beyond 64 bits, UTF-16 and UTF-32.
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:
        raise json.JSONDecodeError(type(error).__name__, "", 0) from None


async def read_parameters(request: Request) -> dict[str, Any] | str:
    """The request's GraphQL parameters: its JSON body, or a GET's query string (variables and
    extensions as JSON text); else why they cannot be read."""
    data: Any
    if request.method == "GET":
        data = dict(request.query_params)
        for name in ("variables", "extensions"):
            if name in data:
                try:
                    data[name] = decode_json(data[name])
                except json.JSONDecodeError:
                    return f"The GraphQL operation's `{name}` must be JSON."
    else:
        try:
            data = decode_json(await request.body())
        except json.JSONDecodeError:
            return "Unable to parse request body as JSON"
    if isinstance(data, list):
        return "Batching is not enabled"
    if not isinstance(data, dict):
        return "The request body must be a JSON object."
    for name, kind in FIELD_KINDS:
        value = data.get(name)
        if value is not None and not isinstance(value, str if kind == "a string" else dict):
            return f"The GraphQL operation's `{name}` must be {kind} or null, if provided."
    operation_name = data.get("operationName")
    if operation_name is not None and not NAME.fullmatch(operation_name):
        # No operation has that name; said here, since Strawberry's answer repeats the name
        # and fails with a 500 on a lone surrogate, which has no UTF-8 form.
        return f"Unknown operation named {json.dumps(operation_name)}."
    return data
