"""What the demo partner shop and the "Try it live" page share: a partner's backend calling the
API over HTTP with its key, as a real partner's server would (the key never reaches a browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

CLIENT = web.AppKey("partner_client", aiohttp.ClientSession)


class Refused(Exception):
    """The API's error answer: its status and body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


async def with_client(app: web.Application) -> AsyncIterator[None]:
    """The backend's HTTP client, for the app's lifetime (a cleanup context)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        app[CLIENT] = client
        yield


async def call_api(
    request: web.Request, api_base: str, api_key: str, method: str, path: str, body: Any = None
) -> Any:
    """The partner API's answer to a call with the key; Refused for an error answer."""
    async with request.app[CLIENT].request(
        method, api_base + path, json=body, headers={"Authorization": f"Bearer {api_key}"}
    ) as response:
        answer = await response.json()
        if response.status >= 400:
            raise Refused(response.status, answer)
        return answer
