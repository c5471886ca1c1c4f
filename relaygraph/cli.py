"""The `relaygraph` command line."""

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
from rich.console import Console
from rich.table import Table

from checkpoints import StorageError
from device import DeviceDatabaseError, LocalDevice
from llm import load_chat_model
from nodes.chunks import MIN_PROMPT_TOKENS
from nodes.context import AgentContext
from nodes.state import RunReport
from relaygraph.local_run import default_context, run_local_agent
from relaygraph.progress import RunProgress
from tools.catalog import DATA_TYPES

DEFAULT_STATE = ".relaygraph/relaygraph.db"
DEFAULT_ENTITIES = ".relaygraph/entities.db"
PROMPT_TOKENS_ENV = "RELAYGRAPH_MAX_PROMPT_TOKENS"
DEFAULT_PROMPT_TOKENS = AgentContext().max_prompt_tokens
EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT = 0, 1, 2

NOT_A_FOLDER = "relaygraph: {path} is not a folder."
TOKEN_ENV = "RELAYGRAPH_DEVICE_TOKEN"
#: What the reference device lets the server read unless told otherwise (`--extension`).
DEVICE_EXTENSIONS = (".md", ".txt")
NO_TOKEN = f"no device token: pass --token-file FILE (or --token), or set {TOKEN_ENV}"
MODEL_FAILED = (
    "relaygraph: the model failed ({error}). The run is saved; run the same command again "
    "to continue it."
)
INTERRUPTED = "relaygraph: interrupted. The run is saved; run the same command again to continue."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "keys" and args.keys_command == "create":
        expires = timedelta(days=args.expires_in_days) if args.expires_in_days else None
        return _admin(
            args,
            lambda db, accounts: accounts.create_api_key(db, user_id=args.user, expires_in=expires),
        )
    if args.command == "keys" and args.keys_command == "list":
        return _admin(args, lambda db, accounts: _listed(accounts.list_keys(db, user_id=args.user)))
    if args.command == "keys" and args.keys_command == "revoke":
        return _admin(
            args, lambda db, accounts: _revoked(accounts.revoke_key(db, args.key_id), "key")
        )
    if args.command == "devices" and args.devices_command == "add":
        return _admin(
            args,
            lambda db, accounts: accounts.add_device(db, user_id=args.user, device_id=args.device),
        )
    if args.command == "devices" and args.devices_command == "list":
        return _admin(
            args, lambda db, accounts: _listed(accounts.list_devices(db, user_id=args.user))
        )
    if args.command == "devices" and args.devices_command == "revoke":
        return _admin(
            args,
            lambda db, accounts: _revoked(
                accounts.revoke_device(db, user_id=args.user, device_id=args.device), "device"
            ),
        )
    if args.command == "device":
        return _device(args)
    parser.print_help()
    return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaygraph", description="LangGraph agents whose tools act on your computer."
    )
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser(
        "run",
        help="run the local directory agent over a folder, with an in-process device",
        description="Triage DIR and turn its files into projects, tasks, notes and timelines "
        "in a local SQLite entity database. No server and no API key needed.",
    )
    run.add_argument("directory", metavar="DIR", type=Path)
    run.add_argument(
        "--db",
        type=Path,
        default=Path(DEFAULT_ENTITIES),
        help=f"entity database (default: {DEFAULT_ENTITIES})",
    )
    run.add_argument(
        "--data-types",
        nargs="+",
        choices=DATA_TYPES,
        default=list(DATA_TYPES),
        metavar="TYPE",
        help="tasks, projects, notes, timelines (default: all)",
    )
    run.add_argument(
        "--extensions",
        nargs="+",
        default=[".md", ".txt"],
        metavar="EXT",
        help="file extensions to read (default: .md .txt)",
    )
    run.add_argument(
        "--max-prompt-tokens",
        type=_prompt_tokens,
        default=None,
        metavar="N",
        help="tokens one model request may hold; work is chunked to fit "
        f"(default: $RELAYGRAPH_MAX_PROMPT_TOKENS or {DEFAULT_PROMPT_TOKENS:,}, a 128k model)",
    )
    run.add_argument(
        "--state",
        default=None,
        help="checkpoint database: a SQLite path or postgresql:// URL "
        f"(default: $DATABASE_URL or {DEFAULT_STATE})",
    )

    serve = commands.add_parser("serve", help="run the HTTP API and the device socket")
    serve.add_argument("--host", default=None, help="default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default 8123")
    serve.add_argument("--workers", type=int, default=None, help="runs executing at once")
    _database_option(serve)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys_command")
    create = keys.add_parser("create", help="print a new API key for a user")
    create.add_argument("--user", required=True)
    create.add_argument(
        "--expires-in-days", type=_positive_days, default=None, help="default: until revoked"
    )
    _database_option(create)
    listing = keys.add_parser("list", help="every key's id, user, creation and expiry")
    listing.add_argument("--user", default=None, help="only this user's keys")
    _database_option(listing)
    revoke = keys.add_parser("revoke", help="delete a key: it stops working at once")
    revoke.add_argument("key_id", help="the id `keys list` shows")
    _database_option(revoke)

    devices = commands.add_parser("devices", help="device tokens").add_subparsers(
        dest="devices_command"
    )
    add = devices.add_parser("add", help="print a new token for a user's device")
    add.add_argument("--user", required=True)
    add.add_argument("--device", required=True)
    _database_option(add)
    listing = devices.add_parser("list", help="every device, its user and presence")
    listing.add_argument("--user", default=None, help="only this user's devices")
    _database_option(listing)
    revoke = devices.add_parser("revoke", help="delete a device's token: its next hello fails")
    revoke.add_argument("--user", required=True)
    revoke.add_argument("--device", required=True)
    _database_option(revoke)

    device = commands.add_parser(
        "device", help="the reference device: run tool calls from a server on this computer"
    )
    device.add_argument("--server", required=True, help="for example http://127.0.0.1:8123")
    token = device.add_mutually_exclusive_group()
    token.add_argument(
        "--token-file",
        type=Path,
        help=f"a file holding the token from `relaygraph devices add` (or set ${TOKEN_ENV})",
    )
    token.add_argument(
        "--token", help="the token itself (visible to other local users in `ps`: prefer a file)"
    )
    device.add_argument(
        "--root",
        required=True,
        type=Path,
        action="append",
        help="a folder the server may read (repeatable)",
    )
    device.add_argument(
        "--extension",
        action="append",
        dest="extensions",
        default=None,
        help="a kind of file the server may read, such as .md (repeatable; default: .md .txt)",
    )
    device.add_argument(
        "--db",
        type=Path,
        default=Path(".relaygraph/device.db"),
        help="the device's entity database (default: .relaygraph/device.db)",
    )
    return parser


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"SQLite path or postgresql:// URL (default: $DATABASE_URL or {DEFAULT_STATE})",
    )


def _database_url(args: argparse.Namespace) -> str:
    return str(args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_STATE)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from server.app import create_app
    from server.settings import Settings

    overrides = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            "database_url": args.database_url,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        Console(stderr=True).print(f"relaygraph: invalid settings: {exc}", soft_wrap=True)
        return EXIT_BAD_INPUT
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )
    return EXIT_OK


def _admin(args: argparse.Namespace, action: Any) -> int:
    """Run one action of `server.storage.accounts` against the server's database and print
    its result (imported here: `relaygraph run` loads no server code)."""
    from checkpoints import open_database
    from server.storage import accounts

    async def run() -> str:
        async with open_database(_database_url(args), pool_size=2) as db:
            return str(await action(db, accounts))

    try:
        print(asyncio.run(run()))
    except (StorageError, LookupError) as exc:
        Console(stderr=True).print(f"relaygraph: {exc}", soft_wrap=True)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _device(args: argparse.Namespace) -> int:
    from device.reference import DeviceUnauthorized, run_reference_device

    console = Console(highlight=False, soft_wrap=True)
    missing = [r for r in args.root if not r.is_dir()]
    if missing:
        console.print(NOT_A_FOLDER.format(path=missing[0]), style="red")
        return EXIT_BAD_INPUT
    try:
        token = _device_token(args)
    except (OSError, ValueError) as exc:
        console.print(f"relaygraph: {exc}", style="red")
        return EXIT_BAD_INPUT
    try:
        asyncio.run(
            run_reference_device(
                args.server,
                token,
                list(args.root),
                args.db,
                on_event=console.print,
                extensions=args.extensions or list(DEVICE_EXTENSIONS),
            )
        )
    except (ValueError, DeviceUnauthorized, DeviceDatabaseError) as exc:
        Console(stderr=True).print(f"relaygraph: {exc}", soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 < days <= 36_500:
        raise argparse.ArgumentTypeError(f"{text} days: give more than 0 and at most 36500")
    return days


async def _listed(rows: Awaitable[Sequence[Any]]) -> str:
    """Records as lines of tab-separated fields, a header first."""
    records = list(await rows)
    if not records:
        return "(none)"
    names = [f.name for f in fields(records[0])]
    lines = ["\t".join(names)]
    lines += ["\t".join(str(getattr(r, n) or "-") for n in names) for r in records]
    return "\n".join(lines)


async def _revoked(done: Awaitable[bool], what: str) -> str:
    if not await done:
        raise LookupError(f"no such {what}")
    return f"{what} revoked"


def _device_token(args: argparse.Namespace) -> str:
    """The device token from `--token-file`, `--token` or the environment; raises `ValueError`
    when none gives one, `OSError` when the file cannot be read."""
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    else:
        token = (args.token or os.environ.get(TOKEN_ENV, "")).strip()
    if not token:
        raise ValueError(NO_TOKEN)
    return str(token)


def _prompt_tokens(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of tokens: {text!r}") from exc
    if value < MIN_PROMPT_TOKENS:
        raise argparse.ArgumentTypeError(
            f"{value} tokens is too few: a request needs at least {MIN_PROMPT_TOKENS:,}"
        )
    return value


def _run(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    directory: Path = args.directory
    if not directory.is_dir():
        errors.print(NOT_A_FOLDER.format(path=directory))
        return EXIT_BAD_INPUT
    budget = args.max_prompt_tokens or os.environ.get(PROMPT_TOKENS_ENV)
    try:
        max_prompt_tokens = _prompt_tokens(str(budget or DEFAULT_PROMPT_TOKENS))
    except argparse.ArgumentTypeError as exc:
        errors.print(f"relaygraph: {PROMPT_TOKENS_ENV}: {exc}")
        return EXIT_BAD_INPUT
    state_url = args.state or os.environ.get("DATABASE_URL") or DEFAULT_STATE
    choice = load_chat_model()
    console.print(f"[bold]relaygraph[/] local agent over {directory.resolve()}")
    console.print(f"model: {choice.label}")
    try:
        device = LocalDevice([directory], args.db)
    except DeviceDatabaseError as exc:
        errors.print(f"relaygraph: {exc}")
        return EXIT_BAD_INPUT
    context = default_context(directory, args.data_types, args.extensions)
    context.max_prompt_tokens = max_prompt_tokens
    try:
        with RunProgress(console) as progress:
            outcome = asyncio.run(
                run_local_agent(
                    context=context,
                    state_url=state_url,
                    model=choice.model,
                    device=device,
                    on_update=_show_update(console),
                    on_progress=progress.on_event,
                )
            )
    except StorageError as exc:
        errors.print(f"relaygraph: {exc}")
        return EXIT_BAD_INPUT
    except openai.APIError as exc:
        errors.print(MODEL_FAILED.format(error=exc))
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        errors.print(INTERRUPTED)
        return EXIT_RUN_FAILED
    finally:
        device.close()
    if outcome.resumed:
        console.print(f"(continued the interrupted run {outcome.thread_id})")
    _print_report(console, outcome.report, args.db)
    return EXIT_OK if outcome.report["status"] == "success" else EXIT_RUN_FAILED


def _show_update(console: Console) -> Any:
    def show(namespace: tuple[str, ...], update: dict[str, Any]) -> None:
        for node, values in update.items():
            if not isinstance(values, dict):
                continue
            if node == "scan_device" and "manifest" in values:
                console.print(
                    f"• scanned: {len(values['manifest'])} changed file(s), "
                    f"{len(values.get('projects', []))} existing project(s)"
                )
            elif node == "group_files":
                groups = values.get("groups", [])
                console.print(f"• triage: {len(groups)} group(s) to process")

    return show


def _print_report(console: Console, report: RunReport, db: Path) -> None:
    table = Table(title=f"Run {report['status']}", show_footer=True)
    table.add_column("data type", footer="total")
    table.add_column("created", justify="right", footer=str(sum(report["created"].values())))
    table.add_column("updated", justify="right", footer=str(sum(report["updated"].values())))
    for data_type in DATA_TYPES:
        table.add_row(
            data_type,
            str(report["created"].get(data_type, 0)),
            str(report["updated"].get(data_type, 0)),
        )
    console.print(table)
    console.print(
        f"files: {report['files_scanned']} changed, {report['files_processed']} processed; "
        f"entities in {db}"
    )
    for error in report["errors"]:
        console.print(f"[red]error:[/] {error}")


if __name__ == "__main__":
    sys.exit(main())
