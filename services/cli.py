"""The `linjerum` command line: run the service (or one of its components), seed demo data,
manage API keys, change a venue's seat plan, rebuild or re-drive read models, republish
events, and look into the store (events, audit, state, activity). Every data command accepts
--data-dir and honours DATABASE_URL / NATS_URL."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from tqdm import tqdm

from domain.errors import DomainError
from domain.venues import ChangeSeatPlan
from infra.apikeys import UnknownApiKey, create_key, list_keys, revoke_key
from infra.embedded import EmbeddedUnavailable
from infra.eventstore import Metadata
from infra.logging import configure_logging
from infra.settings import Settings
from infra.supervise import STOP_AGAIN_SECONDS, dependency_of, stop_tasks
from projections.rebuild import events_to_replay, rebuild
from projections.registry import all_projections, chosen
from projections.verify import verify
from services import cli_arguments as arguments
from services.api.activity import recent_activity
from services.audit import add_commands as add_audit_commands
from services.audit import run as run_audit
from services.dev.seed_demo import seed_demo
from services.ports import PortInUse, check_port
from services.processes import run_child, run_processes
from services.replay import add_commands as add_replay_commands
from services.replay import run as run_replay
from services.runtime import COMPONENTS, stripe_simulator
from services.runtime import run as run_service
from services.servers import connected, database
from services.state import add_commands as add_state_commands
from services.state import run as run_state
from services.usecases.catalog_commands import (
    change_seat_plan,
    load_venue,
    organization_id_by_slug,
)

CLI = Metadata(actor="linjerum cli")


DATA_DIR_HELP = "folder for embedded PostgreSQL/NATS data (default $LINJERUM_DATA_DIR or .linjerum)"


def _parser() -> argparse.ArgumentParser:
    """--data-dir goes before the command or after it (`linjerum run --data-dir D`): every
    command's parser takes it too, without a default of its own that would hide the first."""
    parser = argparse.ArgumentParser(prog="linjerum", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help=DATA_DIR_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser = functools.partial(commands.add_parser, parents=[common])

    run = add_parser("run", help="run every component, in a process per group of them")
    run.add_argument(
        "--port", type=arguments.listen_port, default=None, help="gateway port (default 8080)"
    )
    run.add_argument("--host", default=None, help="gateway address (default 127.0.0.1)")
    run.add_argument("--no-seed", action="store_true", help="do not create the demo data")
    run.add_argument(
        "--single-process",
        action="store_true",
        help="every component as a task of this one process (debugging)",
    )
    run.add_argument("--child", default=None, help=argparse.SUPPRESS)
    # A run's processes share their metrics; the gateway's /metrics shows them all.
    run.set_defaults(metrics_port=0)

    for component in COMPONENTS:
        single = add_parser(component, help=f"run only the {component} (production)")
        if component == "gateway":
            single.add_argument(
                "--port", type=arguments.listen_port, default=None, help="default 8080"
            )
            single.add_argument("--host", default=None, help="default 127.0.0.1")
        if component == "projector":
            single.add_argument(
                "--read-models",
                default=None,
                metavar="NAME,NAME",
                help="keep only these read models, through a consumer of their own (default:"
                " every one); run several projectors with different ones to spread them out",
            )
        if component != "gateway":
            single.add_argument(
                "--health-port",
                type=arguments.port,
                default=None,
                help="port for /healthz and /readyz (default $LINJERUM_HEALTH_PORT; unset: none)",
            )
            single.add_argument(
                "--metrics-port",
                type=arguments.port,
                default=None,
                help="port for /metrics, may equal --health-port"
                " (default $LINJERUM_METRICS_PORT; unset: none)",
            )

    sim = add_parser(
        "stripe-sim",
        help="run the Stripe simulator alone, on $STRIPE_SIM_PORT (idle when a key is set)",
    )
    sim.add_argument(
        "--host", dest="listen", default="127.0.0.1", metavar="HOST", help="address to listen on"
    )
    sim.add_argument(
        "--webhook-url",
        default=None,
        help="where Stripe events go (default: the gateway on 127.0.0.1:$LINJERUM_PORT)",
    )

    add_parser("seed-demo", help="create the demo organizations (idempotent)")

    keys = add_parser("keys", help="manage partner API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    add_key_parser = functools.partial(key_commands.add_parser, parents=[common])
    create = add_key_parser("create", help="issue a key; the token is shown once")
    create.add_argument("--org", required=True, help="organization slug")
    create.add_argument("--name", required=True)
    create.add_argument("--allowed-origin", action="append", default=[], dest="allowed_origins")
    create.add_argument(
        "--rate-limit", type=arguments.rate, default=120, help="requests per minute"
    )
    listing = add_key_parser("list", help="list an organization's keys")
    listing.add_argument("--org", required=True)
    revoke = add_key_parser("revoke", help="revoke a key on every gateway at once")
    revoke.add_argument("key_id", type=arguments.positive)

    venues = add_parser("venues", help="change venues")
    venue_commands = venues.add_subparsers(dest="venues_command", required=True)
    set_plan = venue_commands.add_parser(
        "set-plan",
        parents=[common],
        help="replace a venue's sections; open seat planners reload it",
        description="Replace a venue's sections with those in FILE.json, "
        '{"sections": [...]} in the partner API\'s section shape. A section with the "id" of '
        "one of the venue's sections keeps it (the ticket types naming it still do); one "
        "without an id is added. Refused when a seat held or sold for one of the venue's "
        "events would be gone.",
    )
    set_plan.add_argument("venue_id", type=arguments.positive)
    set_plan.add_argument("file", type=Path, metavar="FILE.json")

    rebuild_cmd = add_parser("rebuild", help="rebuild a read model from the events")
    rebuild_cmd.add_argument("name", nargs="?", choices=sorted(all_projections()))
    rebuild_cmd.add_argument("--all", action="store_true", help="every read model, in turn")
    rebuild_cmd.add_argument(
        "--verify", action="store_true", help="compare with a replay, print differences, no swap"
    )
    rebuild_cmd.add_argument(
        "--quiet",
        action="store_true",
        help="only what failed: no progress bar, no per-model lines, no servers' notes",
    )

    activity = add_parser("activity", help="recent partner API calls, newest first")
    activity.add_argument("--org", required=True, help="organization slug")
    activity.add_argument(
        "--key", type=arguments.positive, default=None, help="only this API key id"
    )
    activity.add_argument(
        "--since",
        type=arguments.since,
        default=None,
        help="ISO-8601 time or a duration ago: 15m, 2h, 1d",
    )
    activity.add_argument("--limit", type=arguments.positive, default=100)
    add_audit_commands(add_parser, arguments.since, arguments.positive)
    add_state_commands(add_parser, arguments.since)
    add_replay_commands(add_parser, arguments.since)
    return parser


def _print_json(value: Any) -> None:
    print(msgspec.json.encode(value).decode(), flush=True)


async def _with_database(settings: Settings, action: Any) -> int:
    async with connected(settings, nats=False) as live, database(live) as pool:
        return await action(pool)


async def _keys(args: argparse.Namespace, pool: Any) -> int:
    if args.keys_command == "revoke":
        try:
            _print_json(await revoke_key(pool, args.key_id, CLI))
        except UnknownApiKey:
            print(f"no API key with id {args.key_id}", file=sys.stderr)
            return 1
        return 0
    organization_id = await organization_id_by_slug(pool, args.org)
    if organization_id is None:
        print(f"linjerum {args.command}: no organization with slug {args.org!r}", file=sys.stderr)
        return 1
    if args.keys_command == "list":
        for key in await list_keys(pool, organization_id):
            _print_json(key)
        return 0
    try:
        issued = await create_key(
            pool,
            organization_id,
            args.name,
            allowed_origins=args.allowed_origins,
            rate_limit_per_minute=args.rate_limit,
            metadata=CLI,
        )
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print("Store this token now: it is shown only once.", flush=True)
    _print_json(
        {
            "id": issued.key.id,
            "organization": args.org,
            "name": issued.key.name,
            "allowed_origins": issued.key.allowed_origins,
            "rate_limit_per_minute": issued.key.rate_limit_per_minute,
            "token": issued.token,
        }
    )
    return 0


async def _activity(args: argparse.Namespace, pool: Any) -> int:
    organization_id = await organization_id_by_slug(pool, args.org)
    if organization_id is None:
        print(f"linjerum {args.command}: no organization with slug {args.org!r}", file=sys.stderr)
        return 1
    entries = await recent_activity(
        pool, organization_id, api_key_id=args.key, since=args.since, limit=args.limit
    )
    for entry in entries:
        _print_json(entry)
    return 0


async def _set_plan(args: argparse.Namespace, pool: Any) -> int:
    try:
        cmd = msgspec.json.decode(args.file.read_bytes(), type=ChangeSeatPlan)
        venue = await load_venue(pool, args.venue_id)
        changed = await change_seat_plan(pool, venue.organization_id, args.venue_id, cmd, CLI)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        print(f"linjerum venues set-plan: {exc}", file=sys.stderr)
        return 1
    except DomainError as exc:
        where = f"{exc.field}: " if exc.field and not exc.detail.startswith(exc.field) else ""
        print(f"linjerum venues set-plan: {where}{exc.detail}", file=sys.stderr)
        return 1
    _print_json({"venue_id": args.venue_id, "changed": changed})
    return 0


async def _seed(pool: Any) -> int:
    _print_json(await seed_demo(pool, datetime.now(UTC).date()))
    return 0


async def _rebuild(args: argparse.Namespace, pool: Any) -> int:
    """Exit status 1 when --verify found a difference, 2 when neither NAME nor --all is given."""
    if (args.name is None) == (not args.all):
        print("linjerum rebuild: give either NAME or --all", file=sys.stderr)
        return 2
    names = sorted(all_projections()) if args.all else [args.name]
    differs = False
    for name in names:
        projection = all_projections()[name]
        total = await events_to_replay(pool, projection)
        disable = args.quiet or not sys.stderr.isatty()
        with tqdm(total=total, desc=name, unit="ev", file=sys.stderr, disable=disable) as bar:
            if args.verify:
                differences = await verify(pool, projection, bar.update)
            else:
                replayed = await rebuild(pool, projection, bar.update)
        if not args.verify:
            _print_json({"projection": name, "replayed": replayed})
            continue
        for difference in differences:
            _print_json({"projection": name, **msgspec.structs.asdict(difference)})
        if not args.quiet:  # stdout keeps the differing rows alone, for a machine to read
            verdict = f"{len(differences)} rows differ" if differences else "equals its replay"
            print(f"linjerum rebuild: {name} {verdict} ({total} events)", file=sys.stderr)
        differs = differs or bool(differences)
    return 1 if differs else 0


def _dispatch(args: argparse.Namespace, settings: Settings) -> Coroutine[Any, Any, int | None]:
    if args.command == "run" and args.child:
        return run_child(settings, args.child, seed=not args.no_seed)
    if args.command == "run" and args.single_process:
        return run_service(settings, seed=not args.no_seed)
    if args.command == "run":
        return run_processes(settings, seed=not args.no_seed)
    if args.command == "projector":
        try:
            read_models = chosen(args.read_models)
        except ValueError as exc:
            raise SystemExit(f"linjerum projector: {exc}") from None
        return run_service(settings, seed=False, components=("projector",), read_models=read_models)
    if args.command in COMPONENTS:
        return run_service(settings, seed=False, components=(args.command,))
    if args.command == "stripe-sim":
        if settings.uses_simulator:  # before its banner: a taken port is not PostgreSQL's
            check_port("Stripe simulator", args.listen, settings.stripe_sim_port, "STRIPE_SIM_PORT")
        hook = args.webhook_url or f"http://127.0.0.1:{settings.http_port}/api/v1/webhooks/stripe"
        return stripe_simulator(settings, args.listen, hook)
    if args.command == "seed-demo":
        return _with_database(settings, _seed)
    if args.command == "keys":
        return _with_database(settings, lambda pool: _keys(args, pool))
    if args.command == "venues":
        return _with_database(settings, lambda pool: _set_plan(args, pool))
    if args.command == "activity":
        return _with_database(settings, lambda pool: _activity(args, pool))
    if args.command in ("events", "audit"):
        return _with_database(settings, lambda pool: run_audit(args, pool))
    if args.command == "state":
        return _with_database(settings, lambda pool: run_state(args, pool))
    if args.command == "replay":
        return run_replay(args, settings)
    return _with_database(settings, lambda pool: _rebuild(args, pool))


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    """SIGINT (Ctrl-C) and SIGTERM stop the service cleanly: tasks cancelled, embedded servers
    shut down. The handlers are installed here, not left to Python's defaults: a process started
    in the background inherits SIGINT ignored, and would otherwise never stop on it."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    received: list[int] = []
    stopping: list[asyncio.Task[None]] = []  # held here: the loop keeps only weak references

    def stop(signum: int) -> None:
        # Once: a second signal (a run's child gets the kernel's SIGTERM and its own at once
        # when the run dies) would cancel the shutdown itself half-way. Again only if the
        # process is still running long after: after its components were cancelled again
        # (infra.supervise.stop_tasks) and a run's children had their grace before SIGKILL
        # (services/processes.py). A cancellation lost in its start-up, as asyncio.wait_for
        # loses one on Python 3.11, would leave it serving.
        if not received:
            stopping.append(asyncio.create_task(stop_tasks([task], STOP_AGAIN_SECONDS * 4)))
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await _dispatch(args, settings) or 0
    except asyncio.CancelledError:
        return 130 if signal.SIGINT in received else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env(
        data_dir=args.data_dir,
        http_port=getattr(args, "port", None),
        http_host=getattr(args, "host", None),
        health_port=getattr(args, "health_port", None),
        metrics_port=getattr(args, "metrics_port", None),
    )
    # --quiet asks for the command's answer alone: no progress lines, no servers' notes.
    configure_logging("warning" if getattr(args, "quiet", False) else settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return asyncio.run(_main(args, settings))
        except (PortInUse, EmbeddedUnavailable) as exc:
            print(exc, file=sys.stderr, flush=True)
            return 1
        except Exception as exc:
            # An operator's command fails at once when a server is out of reach (a run waits
            # for it instead): one line naming the server, not the client library's traceback.
            server = dependency_of(exc) or _refused_by_postgres(exc)
            if server is None:
                raise
            reason = str(exc) or type(exc).__name__  # a timeout says nothing of itself
            print(f"linjerum {args.command}: cannot use {server}: {reason}", file=sys.stderr)
            return 1
    return 130


def _refused_by_postgres(exc: Exception) -> str | None:
    """PostgreSQL answers but will not let the command in (no such database, bad login)."""
    refusals = (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError)
    return "postgresql" if isinstance(exc, refusals) else None


if __name__ == "__main__":
    raise SystemExit(main())
