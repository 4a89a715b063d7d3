"""`scriptgen backup create|verify|restore|list|prune`: backups of every store, for operators.

Run where the core's stores are reachable, with the core's own flags and
`SCRIPTGEN_*` variables (data dir, database URL, Chroma, Redis), so the backup
covers exactly what the core uses. Progress goes to stderr; results to stdout
(`--json` for machines). `restore` verifies first and refuses a damaged
backup, restores only into empty stores, and reports how long it took.
`prune` counts only backups `verify` passed (`list` shows which).

A failure ends with exit status 1 and an error on stderr: its message, then
the first problems found (a damaged backup may have thousands) and how many
more; any other failure (a store unreachable or failing mid-way, a full disk)
in one line, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scriptgen.cli._args import integer_in
from scriptgen.cli._options import ConfigurationError, EnvSwitch, set_command
from scriptgen.cli._output import PROGRAM, note, out, print_table

if TYPE_CHECKING:
    from server.backup import Manifest, Stores

_DEFAULT_ROOT = "backups"


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `backup`; its flags (the core's) are declared only when it is chosen."""
    placeholder = commands.add_parser(
        "backup", help="back up, verify, list and restore every store", add_help=False
    )
    set_command(placeholder, _dispatch)
    placeholder.set_defaults(flag_parser=backup_parser)


def backup_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The real parser of `scriptgen backup` (it needs the server package for the core's flags)."""
    from server import config as core_config

    stores = argparse.ArgumentParser(add_help=False)
    core_config.add_arguments(stores, environ)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--json",
        action=EnvSwitch,
        variable="SCRIPTGEN_JSON",
        environ=environ,
        help="machine-readable output [SCRIPTGEN_JSON=1]",
    )
    output.add_argument(
        "--quiet",
        action=EnvSwitch,
        variable="SCRIPTGEN_QUIET",
        environ=environ,
        help="no progress lines on stderr [SCRIPTGEN_QUIET=1]",
    )

    parser = argparse.ArgumentParser(
        prog="scriptgen backup", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", parents=[stores, output], help="back up every store into the new folder DIR"
    )
    create.add_argument("folder", metavar="DIR", type=Path)
    create.add_argument(
        "--allow-empty-knowledge",
        action="store_true",
        help="back up even when the project store has episodes but Chroma holds no story\n"
        "knowledge under the prefix (else refused: the data dir, Chroma URL or prefix\n"
        "is probably wrong)",
    )
    create.set_defaults(action=_create)
    verify = actions.add_parser(
        "verify",
        parents=[output],
        help="check every file, record and count of a backup (a pass is kept in verified.json)",
    )
    verify.add_argument("folder", metavar="DIR", type=Path)
    verify.set_defaults(action=_verify)
    restore = actions.add_parser(
        "restore",
        parents=[stores, output],
        help="verify, then restore into an empty data dir / empty databases",
    )
    restore.add_argument("folder", metavar="DIR", type=Path)
    restore.set_defaults(action=_restore)
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument(
        "root",
        metavar="ROOT",
        type=Path,
        nargs="?",
        default=Path(environ.get("SCRIPTGEN_BACKUP_ROOT", _DEFAULT_ROOT)),
        help="folder holding backups [SCRIPTGEN_BACKUP_ROOT] (default: %(default)s)",
    )
    listing = actions.add_parser(
        "list", parents=[root, output], help="the backups in ROOT, newest first"
    )
    listing.set_defaults(action=_list)
    prune = actions.add_parser(
        "prune",
        parents=[root, output],
        help="remove all but the newest N verified backups of ROOT (and older unverified ones)",
    )
    prune.add_argument(
        "--keep",
        metavar="N",
        type=integer_in(1, 1_000_000),
        required=True,
        help="how many of the newest verified backups to keep (at least 1)",
    )
    prune.set_defaults(action=_prune)
    return parser


async def _dispatch(args: argparse.Namespace) -> int:
    from server.backup import BackupError

    try:
        status: int = await args.action(args)
    except BackupError as error:
        # The message, then its problems (at most SHOWN_PROBLEMS, and how many more).
        _error(str(error))
        return 1
    except (ConfigurationError, BrokenPipeError):
        raise  # a usage error (exit 2), or nobody left to tell: `scriptgen`'s own handling
    except Exception as error:
        # An operator reads this, often from a CronJob's log: one line saying what failed, not
        # a traceback. E.g. sqlite3.OperationalError (disk full), redis ConnectionError,
        # asyncpg's errors when PostgreSQL goes away mid-COPY.
        what = " ".join(str(error).split()) or "no message"
        _error(f"backup {args.action.__name__.lstrip('_')} failed: {type(error).__name__}: {what}")
        return 1
    return status


def _error(text: str) -> None:
    note(f"{PROGRAM}: error: {text}")


def _stores(args: argparse.Namespace) -> Stores:
    from server.backup import Stores
    from server.config import from_arguments

    try:
        return Stores.from_config(from_arguments(args))
    except ValueError as error:
        raise ConfigurationError(str(error)) from None


def _silent(_: str) -> None:
    """Progress with --quiet."""


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    return _silent if args.quiet else note


def _counts(manifest: Manifest) -> dict[str, int]:
    stores = manifest["stores"]
    counts: dict[str, int] = {}
    if "tables" in stores.get("database", {}):
        counts["database_rows"] = sum(t["rows"] for t in stores["database"]["tables"].values())
    if "knowledge" in stores:
        counts["knowledge_records"] = sum(c["count"] for c in stores["knowledge"]["collections"])
    if "redis" in stores:
        counts["redis_keys"] = int(stores["redis"]["count"])
    return counts


def _report(
    args: argparse.Namespace, verb: str, folder: Path, manifest: Manifest, **extra: Any
) -> None:
    summary = {"backup": str(folder), "created": manifest["created"], **_counts(manifest), **extra}
    if args.json:
        out(json.dumps(summary))
        return
    out(f"{verb} {folder} (created {manifest['created']})")
    for key, value in summary.items():
        if key not in {"backup", "created"}:
            out(f"  {key.replace('_', ' ')}: {value}")


async def _create(args: argparse.Namespace) -> int:
    from server.backup import create_backup

    manifest = await create_backup(
        args.folder,
        _stores(args),
        _progress(args),
        allow_empty_knowledge=args.allow_empty_knowledge,
    )
    _report(args, "backed up into", args.folder, manifest)
    return 0


async def _verify(args: argparse.Namespace) -> int:
    from server.backup import verify_backup

    manifest = await verify_backup(args.folder, _progress(args))
    _report(args, "verified", args.folder, manifest)
    return 0


async def _restore(args: argparse.Namespace) -> int:
    from server.backup import restore_backup

    started = time.monotonic()
    manifest = await restore_backup(args.folder, _stores(args), _progress(args))
    seconds = round(time.monotonic() - started, 3)
    _report(args, "restored from", args.folder, manifest, restore_seconds=seconds)
    return 0


def _note_unfinished(args: argparse.Namespace) -> None:
    from server.backup import unfinished

    partial = unfinished(args.root)
    if partial:
        names = ", ".join(path.name for path in partial)
        note(
            f"{len(partial)} unfinished backups in {args.root} (being written, or left by an"
            f" interrupted run; the next create removes stale ones): {names}"
        )


async def _prune(args: argparse.Namespace) -> int:
    from server.backup import prune_backups

    pruned = prune_backups(args.root, args.keep)
    if args.json:
        report = {
            "removed": [str(s.path) for s in pruned.removed],
            "held": [str(s.path) for s in pruned.held],
            "kept": args.keep,
            "newest_verified": None
            if pruned.newest_verified is None
            else str(pruned.newest_verified.path),
        }
        out(json.dumps(report))
    else:
        for summary in pruned.removed:
            out(f"removed {summary.path} (created {summary.created})")
        out(
            f"{len(pruned.removed)} backups removed; the newest {args.keep} verified ones kept,"
            " and any not verified newer than the newest verified"
        )
    for path in pruned.finished:
        note(f"removed {path}: a backup an interrupted prune had begun to remove")
    for summary in pruned.held:
        note(f"left {summary.path} for the next prune: a verify, restore or prune holds it")
    if pruned.newest_verified is None:
        note(
            f"no verified backup in {args.root}: nothing removed (a backup counts once"
            " `scriptgen backup verify` passes on it)"
        )
    _note_unfinished(args)
    return 0


async def _list(args: argparse.Namespace) -> int:
    from server.backup import list_backups

    found = list_backups(args.root)
    _note_unfinished(args)
    if args.json:
        out(
            json.dumps(
                [
                    {
                        "backup": str(s.path),
                        "created": s.created,
                        "bytes": s.bytes,
                        "verified": s.verified or None,
                        # The keys `create --json` uses ("database rows" → "database_rows").
                        **{name.replace(" ", "_"): count for name, count in s.counts.items()},
                        **({"problem": s.problem} if s.problem else {}),
                    }
                    for s in found
                ]
            )
        )
        return 0
    rows = [
        [
            s.path.name,
            s.created or "-",
            str(s.bytes),
            s.verified or ("-" if s.problem else "no"),
            ", ".join(f"{v} {k}" for k, v in s.counts.items()) or s.problem,
        ]
        for s in found
    ]
    print_table(["BACKUP", "CREATED", "BYTES", "VERIFIED", "HOLDS"], rows)
    return 0
