"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from infra.bus import ensure_stream
from infra.settings import Settings


@pytest.fixture
async def js(settings: Settings) -> AsyncIterator[JetStreamContext]:
    """JetStream on the run's own stream, which exists from the first use on."""
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    yield js
    await nc.close()
