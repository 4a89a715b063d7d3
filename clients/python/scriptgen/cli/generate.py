"""`scriptgen generate`: write an episode and stream the script to stdout as it is written.

Exit status: 0 when the episode is saved, 1 when the job failed or was
cancelled by someone else (or a call failed), 130 after Ctrl-C. Ctrl-C
cancels the job unless `--detach` was given, in which case the job keeps
running and the command prints how to follow it again.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Mapping

from scriptgen._client import Client
from scriptgen._errors import ScriptgenError
from scriptgen._stream import GenerationStream
from scriptgen.cli._names import project_name
from scriptgen.cli._options import EnvSwitch, client_parent, connect, set_command
from scriptgen.cli._output import error_line, note
from scriptgen.cli._reporting import EventReporter

#: Exit status after Ctrl-C, as shells report death by SIGINT.
EXIT_INTERRUPTED = 130


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `generate`."""
    generate = commands.add_parser(
        "generate",
        parents=[client_parent(environ)],
        help="write an episode, streaming the script to stdout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("project", type=project_name, help="projects/ID or ID")
    generate.add_argument("--title", required=True, help="title of the episode to write")
    generate.add_argument("--description", default="", help="what should happen in the episode")
    generate.add_argument(
        "--request-id",
        default=environ.get("SCRIPTGEN_REQUEST_ID", ""),
        help="idempotency key; the same key re-attaches to the same job"
        " [SCRIPTGEN_REQUEST_ID] (default: a random one)",
    )
    generate.add_argument(
        "--detach",
        action=EnvSwitch,
        variable="SCRIPTGEN_DETACH",
        environ=environ,
        help="keep the job running when this command stops [SCRIPTGEN_DETACH=1]",
    )
    generate.add_argument(
        "--provider",
        default=environ.get("SCRIPTGEN_PREFERRED_PROVIDER", ""),
        help="provider to try first, e.g. openai [SCRIPTGEN_PREFERRED_PROVIDER]",
    )
    generate.add_argument(
        "--disable-provider",
        action="append",
        default=_names_list(environ.get("SCRIPTGEN_DISABLED_PROVIDERS", "")),
        metavar="PROVIDER",
        help="leave a provider out; repeatable [SCRIPTGEN_DISABLED_PROVIDERS, comma-separated]",
    )
    generate.add_argument(
        "--feature-flag",
        action="append",
        default=_names_list(environ.get("SCRIPTGEN_FEATURE_FLAGS", "")),
        metavar="FLAG",
        help="e.g. no-fallback; repeatable [SCRIPTGEN_FEATURE_FLAGS, comma-separated]",
    )
    generate.add_argument(
        "--quiet",
        action=EnvSwitch,
        variable="SCRIPTGEN_QUIET",
        environ=environ,
        help="no stages or progress on stderr [SCRIPTGEN_QUIET=1]",
    )
    set_command(generate, run)


def _names_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


async def run(args: argparse.Namespace) -> int:
    """Start the job and show its events until it ends."""
    reporter = EventReporter(json=bool(args.json), quiet=bool(args.quiet))
    async with connect(args) as client:
        stream = client.generate(
            str(args.project),
            str(args.title),
            str(args.description),
            request_id=str(args.request_id) or uuid.uuid4().hex,
            detach=bool(args.detach),
            preferred_provider=str(args.provider),
            disabled_providers=list(args.disable_provider),
            feature_flags=list(args.feature_flag),
        )
        try:
            async with stream:
                async for event in stream:
                    reporter.report(event)
        except asyncio.CancelledError:
            # Ctrl-C: asyncio.run cancels this task; the job lives on in the core.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await _leave(client, stream, str(args.project), detach=bool(args.detach))
            return EXIT_INTERRUPTED
    return 0 if reporter.exit_status is None else reporter.exit_status


async def _leave(client: Client, stream: GenerationStream, parent: str, *, detach: bool) -> None:
    name = stream.name or await _find_job(client, parent, stream.request_id)
    if detach:
        if name:
            note(
                f"detached; the job goes on. Follow it with:"
                f" scriptgen generations follow {name} --after {stream.last_sequence}"
            )
        return
    if not name:
        note("scriptgen: interrupted before the job was accepted")
        return
    try:
        job = await client.cancel_generation(name, deadline=5.0)
    except ScriptgenError as error:
        note(f"scriptgen: error: could not cancel {name}: {error_line(error)}")
        return
    note(f"cancelled {job.name}")


async def _find_job(client: Client, parent: str, request_id: str) -> str:
    """The job started with `request_id`, when Ctrl-C came before its first event."""
    try:
        page = await client.list_generations(parent, page_size=50, deadline=5.0)
    except ScriptgenError:
        return ""
    for job in page.generations:
        if job.request_id == request_id:
            return job.name
    return ""
