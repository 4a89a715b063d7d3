"""`scriptgen generations list|show|follow|cancel`: generation jobs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from scriptgen.cli._args import page_size, sequence
from scriptgen.cli._names import generation_name, project_name
from scriptgen.cli._options import EnvSwitch, client_parent, connect, set_command
from scriptgen.cli._output import out, print_json, print_json_list, print_table, timestamp
from scriptgen.cli._reporting import EventReporter
from scriptgen.v1 import generation_pb2


def state_label(state: generation_pb2.GenerationState.ValueType) -> str:
    """`queued`, `running`, ... for people."""
    return generation_pb2.GenerationState.Name(state).removeprefix("GENERATION_STATE_").lower()


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `generations` and its subcommands."""
    parent = client_parent(environ)
    generations = commands.add_parser("generations", help="list, show, follow, cancel jobs")
    actions = generations.add_subparsers(title="commands", metavar="COMMAND", required=True)

    listing = actions.add_parser("list", parents=[parent], help="list jobs, newest first")
    listing.add_argument("--project", type=project_name, help="only this project's jobs")
    listing.add_argument(
        "--page-size", type=page_size, default=0, help="jobs per call (0: 50, at most 1000)"
    )
    set_command(listing, _list)

    show = actions.add_parser("show", parents=[parent], help="show one job")
    show.add_argument("generation", type=generation_name, help="generations/ID or ID")
    set_command(show, _show)

    follow = actions.add_parser(
        "follow", parents=[parent], help="stream a job's events: replay, then live"
    )
    follow.add_argument("generation", type=generation_name, help="generations/ID or ID")
    follow.add_argument(
        "--after", type=sequence, default=0, metavar="SEQUENCE", help="skip events up to this one"
    )
    follow.add_argument(
        "--quiet",
        action=EnvSwitch,
        variable="SCRIPTGEN_QUIET",
        environ=environ,
        help="no stages or progress on stderr [SCRIPTGEN_QUIET=1]",
    )
    set_command(follow, _follow)

    cancel = actions.add_parser("cancel", parents=[parent], help="cancel a job")
    cancel.add_argument("generation", type=generation_name, help="generations/ID or ID")
    set_command(cancel, _cancel)


def _show_job(job: generation_pb2.Generation) -> None:
    out(job.name)
    rows = [
        ("project", job.parent),
        ("title", job.title),
        ("state", state_label(job.state)),
        ("events", str(job.last_sequence)),
        ("episode", job.episode),
        ("error", job.error.message),
        ("created", timestamp(job.create_time)),
        ("updated", timestamp(job.update_time)),
    ]
    for label, value in rows:
        if value:
            out(f"  {label + ':':<9}{value}")


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        jobs = [
            job async for job in client.iter_generations(args.project or "", int(args.page_size))
        ]
    if args.json:
        print_json_list("generations", jobs)
        return 0
    rows = [
        (job.name, state_label(job.state), job.parent, timestamp(job.create_time), job.title)
        for job in jobs
    ]
    print_table(("NAME", "STATE", "PROJECT", "CREATED", "TITLE"), rows)
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        job = await client.get_generation(str(args.generation))
    if args.json:
        print_json(job)
    else:
        _show_job(job)
    return 0


async def _follow(args: argparse.Namespace) -> int:
    after = int(args.after)
    reporter = EventReporter(json=bool(args.json), quiet=bool(args.quiet), partial=after > 0)
    async with connect(args) as client, client.follow(str(args.generation), after) as stream:
        async for event in stream:
            reporter.report(event)
    return 0 if reporter.exit_status is None else reporter.exit_status


async def _cancel(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        job = await client.cancel_generation(str(args.generation))
    if args.json:
        print_json(job)
    else:
        _show_job(job)
    return 0
