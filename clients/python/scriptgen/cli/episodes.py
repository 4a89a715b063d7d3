"""`scriptgen episodes list|show|export|delete`: the written episodes of a project."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

from scriptgen.cli._args import page_size
from scriptgen.cli._names import episode_name, project_name
from scriptgen.cli._options import client_parent, connect, set_command
from scriptgen.cli._output import note, out, print_json, print_json_list, print_table, timestamp
from scriptgen.v1 import project_service_pb2

#: `fountain`, `fdx`, `html`, `pdf`.
EXPORT_FORMATS: tuple[str, ...] = tuple(
    key.removeprefix("EXPORT_FORMAT_").lower()
    for key, _number in project_service_pb2.ExportFormat.items()
    if key != "EXPORT_FORMAT_UNSPECIFIED"
)


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `episodes` and its subcommands."""
    parent = client_parent(environ)
    episodes = commands.add_parser("episodes", help="list, show, delete episodes")
    actions = episodes.add_subparsers(title="commands", metavar="COMMAND", required=True)

    listing = actions.add_parser("list", parents=[parent], help="list a project's episodes")
    listing.add_argument("project", type=project_name, help="projects/ID or ID")
    listing.add_argument(
        "--page-size", type=page_size, default=0, help="episodes per call (0: 50, at most 1000)"
    )
    set_command(listing, _list)

    show = actions.add_parser(
        "show", parents=[parent], help="print an episode's script (details on stderr)"
    )
    show.add_argument("episode", type=episode_name, help="projects/ID/episodes/N or ID/N")
    set_command(show, _show)

    export = actions.add_parser(
        "export", parents=[parent], help="save an episode as Fountain, FDX, HTML or PDF"
    )
    export.add_argument("episode", type=episode_name, help="projects/ID/episodes/N or ID/N")
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="fountain",
        help="file format (default: %(default)s)",
    )
    export.add_argument(
        "--output",
        "-o",
        help="file to write; '-' for stdout (default: the name the core suggests)",
    )
    set_command(export, _export)

    delete = actions.add_parser("delete", parents=[parent], help="delete an episode")
    delete.add_argument("episode", type=episode_name, help="projects/ID/episodes/N or ID/N")
    set_command(delete, _delete)


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        episodes = [
            episode
            async for episode in client.iter_episodes(str(args.project), int(args.page_size))
        ]
    if args.json:
        print_json_list("episodes", episodes)
        return 0
    rows = [
        (
            episode.name,
            str(episode.number),
            str(episode.scene_count),
            str(episode.word_count),
            timestamp(episode.create_time),
            episode.title,
        )
        for episode in episodes
    ]
    print_table(("NAME", "NUMBER", "SCENES", "WORDS", "CREATED", "TITLE"), rows)
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        episode = await client.get_episode(str(args.episode))
    if args.json:
        print_json(episode)
        return 0
    # The script alone goes to stdout so that `> pilot.fountain` saves a clean file.
    note(
        f"{episode.name}: episode {episode.number} {episode.title!r},"
        f" {episode.scene_count} scenes, {episode.word_count} words"
    )
    out(episode.script, end="" if episode.script.endswith("\n") else "\n")
    return 0


async def _export(args: argparse.Namespace) -> int:
    format_value = project_service_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{args.format.upper()}")
    async with connect(args) as client:
        exported = await client.export_episode(str(args.episode), format_value)
    if args.output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(exported.content)
        sys.stdout.buffer.flush()
        return 0
    path = Path(args.output or exported.filename or f"episode.{args.format}")
    await asyncio.to_thread(path.write_bytes, exported.content)
    if args.json:
        print_json({"path": str(path), "contentType": exported.content_type})
    else:
        out(f"wrote {path} ({exported.content_type}, {len(exported.content)} bytes)")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        await client.delete_episode(str(args.episode))
    if args.json:
        print_json({})
    else:
        out(f"deleted {args.episode}")
    return 0
