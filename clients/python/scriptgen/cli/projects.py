"""`scriptgen projects create|list|show|update|delete`: a writer's projects."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from scriptgen.cli._args import episode_minutes, page_size
from scriptgen.cli._names import project_name
from scriptgen.cli._options import client_parent, connect, set_command
from scriptgen.cli._output import note, out, print_json, print_json_list, print_table, timestamp
from scriptgen.v1 import project_pb2

_TYPE_PREFIX = "PROJECT_TYPE_"

#: `drama`, `web-series`, ... for every ProjectType but UNSPECIFIED.
PROJECT_TYPES: tuple[str, ...] = tuple(
    key.removeprefix(_TYPE_PREFIX).lower().replace("_", "-")
    for key, _number in project_pb2.ProjectType.items()
    if key != "PROJECT_TYPE_UNSPECIFIED"
)


def project_type(text: str) -> project_pb2.ProjectType.ValueType:
    """A ProjectType from `drama`, `web-series`, `web_series` or `PROJECT_TYPE_WEB_SERIES`."""
    key = text.strip().upper().replace("-", "_")
    if not key.startswith(_TYPE_PREFIX):
        key = _TYPE_PREFIX + key
    try:
        return project_pb2.ProjectType.Value(key)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown project type {text!r}; one of: {', '.join(PROJECT_TYPES)}"
        ) from None


#: `active`, `paused`, ... for every ProjectStatus but UNSPECIFIED.
PROJECT_STATUSES: tuple[str, ...] = tuple(
    key.removeprefix("PROJECT_STATUS_").lower()
    for key, _number in project_pb2.ProjectStatus.items()
    if key != "PROJECT_STATUS_UNSPECIFIED"
)

#: The fields the create and update flags set, by proto field name.
_FIELDS = (
    "title",
    "type",
    "logline",
    "description",
    "language",
    "audience",
    "tone",
    "target_episode_minutes",
    "status",
)


def project_status(text: str) -> project_pb2.ProjectStatus.ValueType:
    """A ProjectStatus from `active`, `archived`, ... or `PROJECT_STATUS_ARCHIVED`."""
    key = text.strip().upper()
    if not key.startswith("PROJECT_STATUS_"):
        key = "PROJECT_STATUS_" + key
    try:
        return project_pb2.ProjectStatus.Value(key)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown project status {text!r}; one of: {', '.join(PROJECT_STATUSES)}"
        ) from None


def status_label(value: project_pb2.ProjectStatus.ValueType) -> str:
    """`active`, `archived`, ... for people."""
    return project_pb2.ProjectStatus.Name(value).removeprefix("PROJECT_STATUS_").lower()


def type_label(value: project_pb2.ProjectType.ValueType) -> str:
    """`drama`, `web-series`, ... for people."""
    return project_pb2.ProjectType.Name(value).removeprefix(_TYPE_PREFIX).lower().replace("_", "-")


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `projects` and its subcommands."""
    parent = client_parent(environ)
    projects = commands.add_parser("projects", help="create, list, show, update, delete projects")
    actions = projects.add_subparsers(title="commands", metavar="COMMAND", required=True)

    create = actions.add_parser("create", parents=[parent], help="create a project")
    create.add_argument("--title", required=True, help="working title")
    _add_field_flags(create)
    create.add_argument("--id", default="", help="project id to use; a random one otherwise")
    set_command(create, _create)

    listing = actions.add_parser("list", parents=[parent], help="list projects, newest first")
    listing.add_argument(
        "--page-size", type=page_size, default=0, help="projects per call (0: 50, at most 1000)"
    )
    set_command(listing, _list)

    show = actions.add_parser("show", parents=[parent], help="show one project")
    show.add_argument("project", type=project_name, help="projects/ID or ID")
    set_command(show, _show)

    update = actions.add_parser("update", parents=[parent], help="change fields of a project")
    update.add_argument("project", type=project_name, help="projects/ID or ID")
    update.add_argument("--title", help="new working title")
    _add_field_flags(update)
    set_command(update, _update)

    delete = actions.add_parser("delete", parents=[parent], help="delete a project")
    delete.add_argument("project", type=project_name, help="projects/ID or ID")
    delete.add_argument("--force", action="store_true", help="also delete its episodes")
    set_command(delete, _delete)


def _add_field_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type",
        type=project_type,
        help=f"kind of project: {', '.join(PROJECT_TYPES)}",
    )
    parser.add_argument("--logline", help="one or two sentences that sell the story")
    parser.add_argument("--description", help="the story, its world and its people")
    parser.add_argument("--language", help="BCP-47 language of the episodes, e.g. en or ko")
    parser.add_argument("--audience", help="who the story is for, e.g. teenagers")
    parser.add_argument("--tone", help="tone and style, e.g. dry humour, noir lighting")
    parser.add_argument(
        "--minutes",
        dest="target_episode_minutes",
        type=episode_minutes,
        help="target running time of an episode, at most 180; 0 for the type's default",
    )
    parser.add_argument(
        "--status",
        type=project_status,
        help=f"where the project is in its life: {', '.join(PROJECT_STATUSES)}",
    )


def _fields(args: argparse.Namespace) -> project_pb2.Project:
    project = project_pb2.Project()
    for field in _FIELDS:
        value = getattr(args, field, None)
        if value is not None:
            setattr(project, field, value)
    return project


def _mask(args: argparse.Namespace) -> list[str]:
    return [field for field in _FIELDS if getattr(args, field, None) is not None]


def _show_project(project: project_pb2.Project) -> None:
    out(project.name)
    rows = [
        ("title", project.title),
        ("type", type_label(project.type)),
        ("language", project.language),
        (
            "status",
            project_pb2.ProjectStatus.Name(project.status).removeprefix("PROJECT_STATUS_").lower(),
        ),
        ("audience", project.audience),
        ("tone", project.tone),
        ("minutes", str(project.target_episode_minutes or "")),
        ("episodes", str(project.episode_count)),
        ("created", timestamp(project.create_time)),
        ("updated", timestamp(project.update_time)),
        ("logline", project.logline),
        ("description", project.description),
    ]
    for label, value in rows:
        if value:
            out(f"  {label + ':':<13}{value}")


async def _create(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        project = await client.create_project(_fields(args), project_id=str(args.id))
    if args.json:
        print_json(project)
    else:
        out(project.name)
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        projects = [project async for project in client.iter_projects(int(args.page_size))]
    if args.json:
        print_json_list("projects", projects)
        return 0
    rows = [
        (
            project.name,
            type_label(project.type),
            str(project.episode_count),
            timestamp(project.create_time),
            project.title,
        )
        for project in projects
    ]
    print_table(("NAME", "TYPE", "EPISODES", "CREATED", "TITLE"), rows)
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        project = await client.get_project(str(args.project))
    if args.json:
        print_json(project)
    else:
        _show_project(project)
    return 0


async def _update(args: argparse.Namespace) -> int:
    mask = _mask(args)
    if not mask:
        note("scriptgen: error: nothing to change: give at least one field flag (see --help)")
        return 2
    project = _fields(args)
    project.name = str(args.project)
    async with connect(args) as client:
        updated = await client.update_project(project, mask)
    if args.json:
        print_json(updated)
    else:
        _show_project(updated)
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        await client.delete_project(str(args.project), force=bool(args.force))
    if not args.json:
        out(f"deleted {args.project}")
    else:
        print_json({})
    return 0
