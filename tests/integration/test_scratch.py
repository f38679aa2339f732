"""Scratch databases (what tests and benchmarks work in) on a server reached through a URL with
parameters: a socket folder as `host`, `sslmode`, an application name."""

from __future__ import annotations

import dataclasses

import asyncpg

from infra.scratch import database_name, scratch
from infra.settings import Settings


async def test_a_scratch_database_keeps_the_urls_parameters(settings: Settings) -> None:
    joiner = "&" if "?" in settings.database_url else "?"
    with_parameters = dataclasses.replace(
        settings, database_url=f"{settings.database_url}{joiner}application_name=linjerum-scratch"
    )
    name = f"{database_name(settings)}_parameters"
    async with scratch(with_parameters, name, stream=False) as own:
        assert database_name(own) == name
        conn = await asyncpg.connect(own.database_url)
        try:
            assert await conn.fetchval("SELECT current_database()") == name
            assert await conn.fetchval("SELECT current_setting('application_name')") == (
                "linjerum-scratch"
            )
        finally:
            await conn.close()
