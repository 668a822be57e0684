"""``GET /v1/models`` and ``GET /v1/models/{id}``: the routes and models a key may use.

The caller's shape follows its headers: ``anthropic-version`` (sent by the
Anthropic SDK) gets Anthropic's paged list and error envelope, anything else
OpenAI's (:mod:`trioproxy.dialects.models`).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl

import orjson

from trioproxy.config.model import Settings
from trioproxy.core.types import Dialect
from trioproxy.dialects.models import anthropic_list, anthropic_model, openai_list, openai_model
from trioproxy.edge.asgi_io import Scope, Send, send_whole
from trioproxy.edge.auth import KeyRing, may_use
from trioproxy.edge.refusals import Refused
from trioproxy.errors import CallerError, ErrorKind, GatewayError, invalid

PREFIX = "/v1/models/"


def caller_dialect(headers: Iterable[tuple[bytes, bytes]]) -> Dialect:
    """The dialect of a caller on a path that names none (``/v1/models``, an unknown path:
    the Anthropic SDK at a base URL with a stray ``/v1`` asks ``POST /v1/v1/messages``):
    Anthropic's when it sends ``anthropic-version`` (its SDK always does), else OpenAI's."""
    return "anthropic" if any(name == b"anthropic-version" for name, _ in headers) else "openai"


async def serve_models(settings: Settings, keys: KeyRing, scope: Scope, send: Send) -> None:
    headers = dict(scope["headers"])
    dialect = caller_dialect(scope["headers"])
    path: str = scope["path"]
    key = None
    try:
        key = await keys.resolve(headers)
        names = [n for n in (*settings.routes, *settings.models) if may_use(key, n)]
        if path.startswith(PREFIX):
            body = _one(names, path[len(PREFIX) :], frozenset(settings.routes), dialect)
        elif dialect == "anthropic":
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            try:
                body = anthropic_list(names, query)
            except ValueError as exc:
                raise invalid(str(exc)) from None
        else:
            body = openai_list(names, frozenset(settings.routes))
    except GatewayError as err:  # answered and recorded by the app
        name, team = (None, None) if key is None else (key.name, key.team)
        raise Refused(err, dialect, key=name, team=team) from None
    await send_whole(send, 200, body, [])


def _one(names: list[str], name: str, routes: frozenset[str], dialect: Dialect) -> bytes:
    if name not in names:
        raise CallerError(ErrorKind.UNKNOWN_ROUTE, f"The model '{name}' does not exist.",
                          param="model")  # fmt: skip
    if dialect == "anthropic":
        return orjson.dumps(anthropic_model(name))
    return orjson.dumps(openai_model(name, route=name in routes))


__all__ = ["serve_models"]
