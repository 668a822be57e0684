"""Chat requests as the tests send them: one body shape, one bearer header, one client
per call (over the network to a gateway's URL, or in process to its ASGI app)."""

from __future__ import annotations

from typing import Any

import httpx

CHAT_PATH = "/v1/chat/completions"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def chat_body(content: str, model: str = "chat", **extra: Any) -> dict[str, Any]:
    """A one-message chat request for ``model``, with ``extra`` fields."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def post_chat(
    url: str, key: str, body: dict[str, Any], *, path: str = CHAT_PATH,
    headers: dict[str, str] | None = None, client_timeout_s: float = 30,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.Response:  # fmt: skip
    """POST ``body`` to ``url + path`` with ``key`` as the bearer token."""
    async with httpx.AsyncClient(transport=transport, timeout=client_timeout_s) as c:
        return await c.post(url + path, json=body, headers={**bearer(key), **(headers or {})})


async def asgi_chat(app: Any, key: str, body: dict[str, Any]) -> httpx.Response:
    """The same request through ``app`` (a gateway's own ASGI app), no socket in between."""
    transport = httpx.ASGITransport(app=app)
    return await post_chat("http://gw", key, body, transport=transport)


__all__ = ["CHAT_PATH", "asgi_chat", "bearer", "chat_body", "post_chat"]
