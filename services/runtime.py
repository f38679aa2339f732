"""Wiring the processes together: on the servers services/servers.py reaches, the components of a
process as its asyncio tasks (all of them for `linjerum run --single-process`;
services/processes.py runs them in several processes)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from nats.aio.client import Client

from infra.apikeys import authenticate, create_key
from infra.bus import connect, ensure_stream, jetstream
from infra.db import close_pool, create_pool
from infra.embed_tokens import embed_signer
from infra.eventstore import Metadata
from infra.mail import EmlDirectory, MailTransport, SmtpSettings, SmtpTransport
from infra.offer_feed import OfferFeed
from infra.payments import SIMULATOR_HOST, SIMULATOR_WEBHOOK_SECRET, Payments
from infra.render_workers import pdf_renderer
from infra.settings import Settings
from infra.supervise import OUTAGES, raise_failure, stop_tasks
from infra.wallet.keys import HandoutKeys
from projections.framework import Projection
from projections.registry import all_projections
from services.api.activity import ActivityLog
from services.api.attendee_pages import attendee_link
from services.api.forwarded import trusted_networks
from services.api.gateway import GatewayRunner, create_app
from services.dev.demo_catalog import DEMO_ORGANIZATION
from services.dev.demo_shop import PATH as DEMO_SHOP_PATH
from services.dev.demo_shop import ShopSettings, demo_shop
from services.dev.seed_demo import seed_demo
from services.dev.stripe_sim import serve_simulator
from services.dev.try_live import PATH as TRY_PATH
from services.dev.try_live import TrySettings, try_live
from services.health import Readiness, serve_health
from services.ports import check_ports
from services.servers import connected, database
from services.usecases.catalog_commands import organization_id_by_slug
from services.usecases.desk_owners import DeskOwners
from services.usecases.purchases import Purchases
from services.usecases.ticket_documents import Documents
from services.workers.mailer import MAIL_OUTBOX, Mailer
from services.workers.payment_effects import PAYMENT_OUTBOX, PaymentEffects
from services.workers.projector import Projector
from services.workers.relay import Relay
from services.workers.sweeper import run_sweeper

log = structlog.get_logger(__name__)

DEMO_KEY_FILE = "demo-api-key"
# The Stripe simulator's objects and owed webhooks, kept across restarts of the run.
SIM_JOURNAL = "stripe-sim.jsonl"
# The sales desks', the payment recorder's and the ticket ids' own connections
# (services/usecases/purchases.py), connected at start: an on-sale's first buyers do not wait for a
# connection to be opened.
WRITER_CONNECTIONS = 3
# Allocations between young-generation collections, and collections between older ones
# (Python's defaults: 700, 10, 10).
COLLECTOR_THRESHOLDS = (10_000, 20, 100)
# How long the gateway lets requests in flight finish when it stops (aiohttp's default: 60 s),
# shorter than infra.supervise.STOP_AGAIN_SECONDS, after which its activity-log flush would be
# cut short.
DRAIN_SECONDS = 3.0


async def demo_api_key(pool: asyncpg.Pool, settings: Settings) -> str:
    """A working key for the demo organization, kept in the data folder so every `run` prints
    the same one (development only: real keys are shown once and never stored)."""
    path = settings.data_dir / DEMO_KEY_FILE
    if path.exists():
        token = path.read_text().strip()
        if await authenticate(pool, token):
            return token
    organization_id = await organization_id_by_slug(pool, DEMO_ORGANIZATION)
    issued = await create_key(
        pool, organization_id, "demo (linjerum run)", metadata=Metadata(actor="linjerum run")
    )
    path.write_text(issued.token + "\n")
    path.chmod(0o600)
    return issued.token


async def _serve_http(
    live: Settings,
    pool: asyncpg.Pool,
    sales: Purchases,
    documents: Documents,
    readiness: Readiness,
    shop: web.Application | None = None,
    tried: web.Application | None = None,
) -> None:
    """The gateway and its activity-log writer; what is still buffered is written on the way
    out, so a clean shutdown loses no activity rows. Seat offers go to the other gateways on a
    connection of their own that does not hear its own notes back. `shop`: the demo partner
    shop, served beside the API under its own path; `tried`: the "Try it live" page, likewise."""
    activity = ActivityLog(pool)
    writer = asyncio.create_task(activity.run())
    notes = await connect(live, "gateway-offers", echo=False)
    offers = OfferFeed(notes, live.offers_subject)
    handout = HandoutKeys.from_settings(live, _public_url(live))
    signer = embed_signer(live)
    app = create_app(
        pool,
        activity,
        sales,
        documents,
        offers,
        readiness,
        handout,
        signer,
        share_limits=True,
        trusted_proxies=trusted_networks(live.trusted_proxies),
    )
    if shop is not None:
        app.add_subapp(DEMO_SHOP_PATH, shop)
    if tried is not None:
        app.add_subapp(TRY_PATH, tried)
    runner = GatewayRunner(app, access_log=None, shutdown_timeout=DRAIN_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, live.http_host, live.http_port).start()
        print(f"linjerum is running on http://{live.http_host}:{live.http_port}", flush=True)
        if shop is not None:
            print(f"demo partner shop on {_public_url(live)}{DEMO_SHOP_PATH}", flush=True)
        if tried is not None:
            print(f"try the embeds live on {_public_url(live)}{TRY_PATH}", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await activity.close()
        await notes.close()


COMPONENTS = ("gateway", "relay", "projector", "sweeper", "mailer", "payments")
# The outbox each component works off, whose depth its /metrics reports.
OUTBOXES = {"mailer": MAIL_OUTBOX, "payments": PAYMENT_OUTBOX}


def _local_host(live: Settings) -> str:
    return "127.0.0.1" if live.http_host in ("0.0.0.0", "::") else live.http_host


def _public_url(live: Settings) -> str:
    """Where people reach this service: the links in e-mails and handed to holders."""
    return live.public_url or f"http://{_local_host(live)}:{live.http_port}"


def _documents(
    live: Settings, pool: asyncpg.Pool, sales: Purchases, renderer: Executor | None
) -> Documents:
    link = attendee_link(_public_url(live))
    return Documents(pool, sales.catalog, live.smtp_sender, link, renderer)


def _transport(live: Settings) -> MailTransport:
    """SMTP when configured; otherwise each message lands as an .eml file in the data folder."""
    if not live.smtp_host:
        return EmlDirectory(live.data_dir / "mail")
    return SmtpTransport(
        SmtpSettings(
            host=live.smtp_host,
            port=live.smtp_port,
            starttls=live.smtp_starttls,
            ssl=live.smtp_ssl,
            username=live.smtp_username or None,
            password=live.smtp_password or None,
            sender=live.smtp_sender,
        )
    )


def simulator(live: Settings, started: asyncio.Event | None = None) -> Coroutine[Any, Any, None]:
    """The Stripe simulator, delivering its webhooks to the run's gateway."""
    hook = f"http://{_local_host(live)}:{live.http_port}/api/v1/webhooks/stripe"
    secret = live.stripe_webhook_secret or SIMULATOR_WEBHOOK_SECRET
    print(f"Stripe simulator on http://{SIMULATOR_HOST}:{live.stripe_sim_port}", flush=True)
    return serve_simulator(
        SIMULATOR_HOST, live.stripe_sim_port, hook, secret, started, live.data_dir / SIM_JOURNAL
    )


async def stripe_simulator(settings: Settings, host: str, webhook_url: str) -> None:
    """The simulator as a process of its own (`linjerum stripe-sim`, compose's `stripe-sim`),
    delivering its webhooks to `webhook_url`. With STRIPE_SECRET_KEY set it serves nothing and
    waits to be stopped, so one compose file fits both cases and nothing depending on it waits."""
    if settings.uses_simulator:
        secret = settings.stripe_webhook_secret or SIMULATOR_WEBHOOK_SECRET
        print(f"Stripe simulator on http://{host}:{settings.stripe_sim_port}", flush=True)
        journal = settings.data_dir / SIM_JOURNAL
        await serve_simulator(host, settings.stripe_sim_port, webhook_url, secret, None, journal)
    else:
        print("linjerum stripe-sim: STRIPE_SECRET_KEY is set, payments go to Stripe", flush=True)
        await asyncio.Event().wait()


def _demo_shop(live: Settings, token: str | None) -> web.Application | None:
    """The demo partner shop, with the demo key, when the simulator takes its payments."""
    if token is None or not live.starts_simulator:
        return None
    local = f"http://{_local_host(live)}:{live.http_port}"
    simulator = f"http://{SIMULATOR_HOST}:{live.stripe_sim_port}"
    return demo_shop(ShopSettings(api_base=local, api_key=token, simulator_base=simulator))


def _try_live(live: Settings, token: str | None) -> web.Application | None:
    """The "Try it live" page, minting the demo theatre's embeds with the demo key."""
    if token is None:
        return None
    local = f"http://{_local_host(live)}:{live.http_port}"
    return try_live(TrySettings(api_base=local, api_key=token))


async def seeded(pool: asyncpg.Pool, live: Settings) -> str:
    """The demo data (idempotent) and the demo organization's key."""
    created = await seed_demo(pool, datetime.now(UTC).date())
    log.info("demo_seeded", created=created)
    return await demo_api_key(pool, live)


def make_secrets(live: Settings) -> None:
    """The secrets a gateway makes into the data folder when none is configured (embed tokens,
    e-ticket links, development wallet keys), made before the processes sharing them start."""
    embed_signer(live)
    HandoutKeys.from_settings(live, _public_url(live))


async def run(
    settings: Settings,
    *,
    seed: bool = True,
    components: tuple[str, ...] = COMPONENTS,
    token: str | None = None,
    siblings: Callable[[Readiness], Coroutine[Any, Any, None]] | None = None,
    simulates: bool = True,
    read_models: Sequence[Projection] | None = None,
) -> None:
    """All components in one process (`linjerum run --single-process`), a group of them in a
    child of `linjerum run` (services/processes.py; `siblings` follows the parent), or a single
    one per process in production (`linjerum relay`, `linjerum gateway`, as in compose.yaml).
    `token`: the demo key the development pages use, when `seed` does not make it here.
    `simulates`: a gateway here starts the Stripe simulator when the settings call for one
    (False: the run's parent process serves it). `read_models`: what a projector here keeps
    (default: every read model)."""
    check_ports(settings, components, simulates=simulates)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with connected(settings) as live, database(live, waiting=True) as pool:
        nc = await connect(live, "+".join(components))
        try:
            js = jetstream(nc)
            await ensure_stream(js, live)
            if seed:
                token = await seeded(pool, live)
            # Only a gateway (a purchase's PDF) and a mailer (the attachments) render.
            renders = bool({"gateway", "mailer"} & set(components))
            with pdf_renderer(live.pdf_workers if renders else 0) as renderer:
                await _serve(
                    live,
                    pool,
                    nc,
                    components,
                    renderer,
                    token,
                    siblings,
                    simulates,
                    list(read_models or all_projections().values()),
                )
        finally:
            await nc.close()


def _readiness(
    live: Settings,
    pool: asyncpg.Pool,
    nc: Client,
    components: tuple[str, ...],
    read_models: Sequence[Projection],
) -> Readiness:
    """What this process's /readyz checks: the database always; NATS and the lag of what it
    publishes or projects for the components that use them. A gateway's reads come from every
    read model, so it answers for their lag as well; and as the process `linjerum run` is
    scraped through, for the depth of every outbox (the workers' process is never scraped)."""
    used = set(components)
    projected = all_projections().values() if "gateway" in used else read_models
    outboxes = [table for name, table in OUTBOXES.items() if name in used or "gateway" in used]
    return Readiness(
        pool,
        nats=nc if used & {"gateway", "relay", "projector"} else None,
        relay=bool(used & {"gateway", "relay"}),
        projections=projected if used & {"gateway", "projector"} else (),
        max_lag_seconds=live.ready_max_lag_seconds,
        outboxes=outboxes,
    )


def _worker_http(live: Settings, readiness: Readiness) -> dict[str, Coroutine[Any, Any, None]]:
    """A worker's /healthz and /readyz on --health-port and /metrics on --metrics-port: one
    server when the two are the same port, none for a port left unset (0)."""
    return {
        "health" if port == live.health_port else "metrics": serve_health(
            readiness,
            live.http_host,
            port,
            health=port == live.health_port,
            scrape=port == live.metrics_port,
        )
        for port in {live.health_port, live.metrics_port} - {0}
    }


async def _answers(database_url: str) -> None:
    """Raises while PostgreSQL does not accept a connection."""
    conn = await asyncpg.connect(database_url, timeout=2)
    await conn.close()


async def _connected(nc: Client) -> None:
    if not nc.is_connected:
        raise ConnectionError("NATS is not connected")


def _quiet_collector() -> None:
    """What exists once the process has started (modules, settings, pools) lives as long as
    the process, so the cycle collector stops walking it, and it looks at new objects less
    often. With Python's defaults a gateway in an on-sale ran a full collection every few
    seconds, each stopping the event loop for 35-45 ms: the purchases in flight at that moment
    were the slowest of the sale."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


async def _serve(
    live: Settings,
    pool: asyncpg.Pool,
    nc: Client,
    components: tuple[str, ...],
    renderer: Executor | None,
    token: str | None,
    siblings: Callable[[Readiness], Coroutine[Any, Any, None]] | None = None,
    simulates: bool = True,
    read_models: Sequence[Projection] = (),
) -> None:
    """The components' tasks, until one fails or all are cancelled."""
    js = jetstream(nc)
    payments = Payments.from_settings(live)
    sells = bool({"gateway", "sweeper"} & set(components))
    writer = (
        await create_pool(live.database_url, WRITER_CONNECTIONS, opened=WRITER_CONNECTIONS)
        if sells
        else None
    )
    sales = Purchases(
        pool,
        payments,
        publishable_key=payments.publishable_key,
        hold_minutes=live.hold_minutes,
        writer=writer,
    )
    if "gateway" in components and live.desk_affinity:
        await sales.route(await DeskOwners.open(nc, live))
    documents = _documents(live, pool, sales, renderer)
    readiness = _readiness(live, pool, nc, components, read_models)
    work: dict[str, Coroutine[Any, Any, None]] = {}
    if simulates and live.starts_simulator and "gateway" in components:
        work["stripe-simulator"] = simulator(live)
    if "sweeper" in components:
        work["sweeper"] = run_sweeper(sales)
    if "mailer" in components:
        work["mailer"] = Mailer(
            pool,
            _transport(live),
            documents.compose,
            rush_per_second=live.mail_rush_per_second,
            longest_deferral=live.mail_longest_deferral,
        ).run()
    if "payments" in components:
        work["payments"] = PaymentEffects(pool, payments).run()
    if "relay" in components:
        work["relay"] = Relay(pool, js, live).run()
    if "projector" in components:
        # One consumer and one transaction per batch for every read model: a sale's events
        # reach each of them, and a consumer and a transaction each cost more than the rows.
        work["projector"] = Projector(pool, js, live, *read_models).run()
    if "gateway" in components:
        shop = _demo_shop(live, token)
        tried = _try_live(live, token)
        work["gateway"] = _serve_http(live, pool, sales, documents, readiness, shop, tried)
    else:
        work.update(_worker_http(live, readiness))
    if siblings is not None:
        work["parent"] = siblings(readiness)
    if token:
        print(f"demo API key ({DEMO_ORGANIZATION}): {token}", flush=True)
    _quiet_collector()
    readiness.components = {name: asyncio.create_task(c, name=name) for name, c in work.items()}
    tasks = list(readiness.components.values())
    OUTAGES.watch("postgresql", lambda: _answers(live.database_url))
    OUTAGES.watch("nats", lambda: _connected(nc))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        raise_failure(tasks)
    finally:
        OUTAGES.close()
        await stop_tasks(tasks)
        await sales.close()
        await payments.close()
        if writer is not None:
            await close_pool(writer)
