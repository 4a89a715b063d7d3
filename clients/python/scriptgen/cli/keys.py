"""`scriptgen keys create|list|revoke|limits`: API keys and tenant limits, for operators.

These commands open the project store directly (run them where the core's data
dir or database is: the same --data-dir / --database-url, SCRIPTGEN_DATA_DIR /
SCRIPTGEN_DATABASE_URL), so they work with no core running and need no key.
`create` prints the new key alone on the last line of its output, once: only
its SHA-256 is kept. Cores notice a revocation within SCRIPTGEN_KEY_CACHE_SECONDS.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from scriptgen.cli._args import integer_in
from scriptgen.cli._options import ConfigurationError, EnvSwitch, set_command
from scriptgen.cli._output import note, out, print_table

if TYPE_CHECKING:
    from server.store.base import ProjectStore

_DEFAULT_DATA_DIR = "scriptgen-data"
_INT32_MAX: Final = 2**31 - 1
_INT64_MAX: Final = 2**63 - 1


def _store_flags(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("where the keys are (the core's project store)")
    group.add_argument(
        "--data-dir",
        default=environ.get("SCRIPTGEN_DATA_DIR", _DEFAULT_DATA_DIR),
        help="the core's data dir [SCRIPTGEN_DATA_DIR] (default: %(default)s)",
    )
    group.add_argument(
        "--database-url",
        default=environ.get("SCRIPTGEN_DATABASE_URL", ""),
        help="the core's project store URL; empty: SQLite in the data dir [SCRIPTGEN_DATABASE_URL]",
    )
    return parent


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `keys` and its subcommands."""
    store = _store_flags(environ)
    keys = commands.add_parser("keys", help="API keys and tenant limits (operators)")
    actions = keys.add_subparsers(title="actions", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create", parents=[store], help="create a key; prints it once, alone on the last line"
    )
    create.add_argument("--tenant", required=True, help="the tenant the key acts for")
    create.add_argument(
        "--scopes",
        default="read,write",
        help="comma-separated: read, write, admin (default: %(default)s)",
    )
    create.add_argument("--description", default="", help="what the key is for")
    set_command(create, _create)

    listing = actions.add_parser("list", parents=[store], help="list keys (never their secrets)")
    listing.add_argument("--tenant", default="", help="only this tenant's keys")
    listing.add_argument(
        "--json",
        action=EnvSwitch,
        variable="SCRIPTGEN_JSON",
        environ=environ,
        help="one JSON object per key [SCRIPTGEN_JSON=1]",
    )
    set_command(listing, _list)

    revoke = actions.add_parser("revoke", parents=[store], help="revoke a key by its id")
    revoke.add_argument("key_id", help="the key's id (k…), as `keys list` shows it")
    set_command(revoke, _revoke)

    limits = actions.add_parser(
        "limits", parents=[store], help="show or set a tenant's limits (0: the core's default)"
    )
    limits.add_argument("tenant")
    # The stores keep the first three as 32-bit integers (PostgreSQL INTEGER), tokens as 64.
    for flag, text, maximum in (
        ("--requests", "calls per key per window", _INT32_MAX),
        ("--window-seconds", "the rate-limit window", _INT32_MAX),
        ("--max-streams", "event streams open at once", _INT32_MAX),
        ("--daily-tokens", "tokens per UTC day", _INT64_MAX),
    ):
        limits.add_argument(flag, type=integer_in(0, maximum), default=None, help=text)
    set_command(limits, _limits)


@asynccontextmanager
async def _opened(args: argparse.Namespace) -> AsyncIterator[ProjectStore]:
    from server.store import build_project_store
    from server.store.factory import check_database_url

    try:
        check_database_url(str(args.database_url))
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    store = build_project_store(str(args.database_url), Path(args.data_dir))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _create(args: argparse.Namespace) -> int:
    from server.auth import new_key
    from server.store.records import now_micros

    scopes = [s.strip() for s in str(args.scopes).split(",") if s.strip()]
    try:
        plaintext, record = new_key(
            str(args.tenant), scopes, description=str(args.description), create_time=now_micros()
        )
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    async with _opened(args) as store:
        await store.create_key(record)
    note(
        f"created key {record.key_id} for tenant {record.tenant!r}"
        f" (scopes: {', '.join(record.scopes)}); it is shown only now"
    )
    out(plaintext)
    return 0


async def _list(args: argparse.Namespace) -> int:
    from server.store.records import timestamp

    async with _opened(args) as store:
        found = await store.list_keys(str(args.tenant))
    if args.json:
        for key in found:
            out(
                json.dumps(
                    {
                        "id": key.key_id,
                        "tenant": key.tenant,
                        "scopes": list(key.scopes),
                        "description": key.description,
                        "createTime": timestamp(key.create_time).ToJsonString(),
                        "revoked": key.revoked,
                    }
                )
            )
        return 0
    print_table(
        ["ID", "TENANT", "SCOPES", "CREATED", "STATE", "DESCRIPTION"],
        [
            [
                key.key_id,
                key.tenant,
                ",".join(key.scopes),
                timestamp(key.create_time).ToJsonString()[:19],
                "revoked" if key.revoked else "active",
                key.description,
            ]
            for key in found
        ],
    )
    return 0


async def _revoke(args: argparse.Namespace) -> int:
    async with _opened(args) as store:
        found = await store.revoke_key(str(args.key_id))
    if not found:
        note(f"scriptgen: no key {args.key_id!r}")
        return 1
    out(f"revoked {args.key_id}")
    return 0


async def _limits(args: argparse.Namespace) -> int:
    from server.auth import TenantLimits
    from server.auth.records import check_tenant

    try:
        tenant = check_tenant(str(args.tenant))
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    changes = {
        "requests_per_window": args.requests,
        "window_seconds": args.window_seconds,
        "max_streams": args.max_streams,
        "daily_tokens": args.daily_tokens,
    }
    async with _opened(args) as store:
        current = await store.get_tenant_limits(tenant)
        if any(value is not None for value in changes.values()):
            current = TenantLimits(
                tenant,
                **{
                    name: getattr(current, name) if value is None else int(value)
                    for name, value in changes.items()
                },
            )
            await store.set_tenant_limits(current)
    out(
        f"{tenant}: requests {current.requests_per_window or 'default'} per"
        f" {current.window_seconds or 'default'} s, streams {current.max_streams or 'default'},"
        f" daily tokens {current.daily_tokens or 'default'}"
    )
    return 0
