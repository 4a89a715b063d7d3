"""The `scriptgen` command: run the service, manage projects, write episodes.

    scriptgen serve                          core + gateway in one process
    scriptgen server | gateway               one of them
    scriptgen projects create|list|show|update|delete
    scriptgen generate PROJECT --title T     stream a new episode's script to stdout
    scriptgen episodes list|show|delete
    scriptgen generations list|show|follow|cancel
    scriptgen knowledge add|list|show|delete  a project's story knowledge
    scriptgen keys create|list|revoke|limits  API keys and tenant limits (operators)
    scriptgen loadtest --spawn --streams N  concurrent generations, measured
    scriptgen backup create|verify|restore|list  backups of every store (operators)

Every flag can also come from a `SCRIPTGEN_*` environment variable (named in
each flag's help). Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from scriptgen._errors import ScriptgenError
from scriptgen.cli import (
    backup,
    episodes,
    generate,
    generations,
    keys,
    knowledge,
    loadtest,
    projects,
    serve,
)
from scriptgen.cli._exit import bound_exit
from scriptgen.cli._loop import loop_factory
from scriptgen.cli._options import Command, ConfigurationError
from scriptgen.cli._output import print_error

#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130
#: Flags that cannot work together, as argparse does for flags it cannot parse.
EXIT_USAGE = 2
#: Exit status when stdout was closed early (`scriptgen generate ... | head`).
EXIT_BROKEN_PIPE = 141

__all__ = ["build_parser", "main", "run"]


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The whole command line, defaults taken from `environ`."""
    parser = argparse.ArgumentParser(
        prog="scriptgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    serve.register(commands, environ)
    projects.register(commands, environ)
    generate.register(commands, environ)
    episodes.register(commands, environ)
    generations.register(commands, environ)
    knowledge.register(commands, environ)
    keys.register(commands, environ)
    loadtest.register(commands, environ)
    backup.register(commands, environ)
    return parser


def _parse(
    argv: Sequence[str] | None, environ: Mapping[str, str]
) -> tuple[Command, argparse.Namespace]:
    parser = build_parser(environ)
    args, extras = parser.parse_known_args(argv)
    flag_parser: serve.FlagParser | None = getattr(args, "flag_parser", None)
    command: Command = args.command
    if flag_parser is not None:
        args = flag_parser(environ).parse_args(extras)
        args.command_arguments = tuple(extras)  # e.g. for `gateway --workers` to pass on
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return command, args


async def _execute(command: Command, args: argparse.Namespace) -> int:
    try:
        return await command(args)
    except ScriptgenError as error:
        print_error(error, target=str(getattr(args, "target", "")))
        return 1
    except ConfigurationError as error:
        print_error(error)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # the reader of stdout left; `main` deals with that, there is nobody to tell
    except OSError as error:
        # e.g. an address already in use: say so, without a traceback
        print_error(error)
        return 1


async def run(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """`main` inside an event loop that is already running (embedding, tests)."""
    command, args = _parse(argv, os.environ if environ is None else environ)
    return await _execute(command, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit status.

    Without `argv` this is the process's own command (the `scriptgen` script, `python -m
    scriptgen`): a server command's exit is then bounded (`_exit.bound_exit`), which would
    end a process that only called `main` (tests, embedding) with arguments of its own."""
    command, args = _parse(argv, os.environ)
    try:
        # Server commands pick their loop (`--event-loop`, uvloop by default), the load tool runs
        # on uvloop where installed; others on asyncio's.
        with asyncio.Runner(loop_factory=loop_factory(getattr(args, "event_loop", None))) as runner:
            status = runner.run(_execute(command, args))
            if argv is None and hasattr(args, "event_loop"):
                # A server process: its servers have stopped; the runner's close and the
                # interpreter's exit wait for threads, and a stuck one must not hold them.
                bound_exit(status)
            return status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `scriptgen generate ... | head`: stdout is gone, and flushing it again at
        # interpreter exit would fail once more, so point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
