"""`scriptgen knowledge add|list|show|delete`: a project's story knowledge.

scriptgen knowledge add PROJECT --kind character-profile --title Minsu --file minsu.md
scriptgen knowledge add PROJECT --kind style-guide --title House < style.md
scriptgen knowledge list PROJECT [--kind world-building]
scriptgen knowledge show PROJECT/DOCUMENT     the text on stdout, details on stderr
scriptgen knowledge delete PROJECT/DOCUMENT
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from scriptgen._errors import ScriptgenError
from scriptgen.cli._args import page_size
from scriptgen.cli._names import project_name
from scriptgen.cli._options import client_parent, connect, set_command
from scriptgen.cli._output import note, out, print_json, print_json_list, print_table, timestamp
from scriptgen.v1 import knowledge_pb2

_KIND_PREFIX = "KNOWLEDGE_KIND_"
_DOCUMENT = re.compile(
    r"(?:projects/)?([A-Za-z0-9][A-Za-z0-9._-]*)(?:/knowledge/|/)([A-Za-z0-9][A-Za-z0-9._-]*)"
)

#: `story-bible`, `character-profile`, ... for every KnowledgeKind but UNSPECIFIED.
KNOWLEDGE_KINDS: tuple[str, ...] = tuple(
    key.removeprefix(_KIND_PREFIX).lower().replace("_", "-")
    for key, _number in knowledge_pb2.KnowledgeKind.items()
    if key != "KNOWLEDGE_KIND_UNSPECIFIED"
)


def knowledge_kind(text: str) -> knowledge_pb2.KnowledgeKind.ValueType:
    """A KnowledgeKind from `character-profile`, `character_profile` or its full enum name."""
    key = text.strip().upper().replace("-", "_")
    if not key.startswith(_KIND_PREFIX):
        key = _KIND_PREFIX + key
    if key == "KNOWLEDGE_KIND_UNSPECIFIED" or key not in knowledge_pb2.KnowledgeKind.keys():  # noqa: SIM118
        raise argparse.ArgumentTypeError(
            f"unknown knowledge kind {text!r}; one of: {', '.join(KNOWLEDGE_KINDS)}"
        )
    return knowledge_pb2.KnowledgeKind.Value(key)


def kind_label(kind: knowledge_pb2.KnowledgeKind.ValueType) -> str:
    """`character-profile` for KNOWLEDGE_KIND_CHARACTER_PROFILE."""
    return (
        knowledge_pb2.KnowledgeKind.Name(kind).removeprefix(_KIND_PREFIX).lower().replace("_", "-")
    )


def document_name(text: str) -> str:
    """`projects/{project}/knowledge/{document}` from itself or `PROJECT/DOCUMENT`."""
    match = _DOCUMENT.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a knowledge document name: {text!r} (projects/ID/knowledge/DOC or ID/DOC)"
        )
    return f"projects/{match.group(1)}/knowledge/{match.group(2)}"


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `knowledge` and its subcommands."""
    parent = client_parent(environ)
    knowledge = commands.add_parser(
        "knowledge", help="add, list, show, delete a project's story knowledge"
    )
    actions = knowledge.add_subparsers(title="commands", metavar="COMMAND", required=True)

    add = actions.add_parser(
        "add",
        parents=[parent],
        help="add a document (text from --file, --text or stdin); prints its name",
    )
    add.add_argument("project", type=project_name, help="projects/ID or ID")
    add.add_argument(
        "--kind", type=knowledge_kind, required=True, help=f"one of: {', '.join(KNOWLEDGE_KINDS)}"
    )
    add.add_argument("--title", required=True, help="e.g. the character's name")
    source = add.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="read the text from this UTF-8 file")
    source.add_argument("--text", help="the text itself")
    add.add_argument("--id", default="", help="document id ([a-z][a-z0-9-]*); random otherwise")
    set_command(add, _add)

    listing = actions.add_parser("list", parents=[parent], help="list a project's documents")
    listing.add_argument("project", type=project_name, help="projects/ID or ID")
    listing.add_argument("--kind", type=knowledge_kind, help="only documents of this kind")
    listing.add_argument(
        "--page-size", type=page_size, default=0, help="documents per call (0: 50, at most 1000)"
    )
    set_command(listing, _list)

    show = actions.add_parser(
        "show", parents=[parent], help="print a document's text (details on stderr)"
    )
    show.add_argument("document", type=document_name, help="projects/ID/knowledge/DOC or ID/DOC")
    set_command(show, _show)

    delete = actions.add_parser("delete", parents=[parent], help="delete a document")
    delete.add_argument("document", type=document_name, help="projects/ID/knowledge/DOC or ID/DOC")
    set_command(delete, _delete)


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return str(args.text)
    try:
        if args.file is not None:
            return Path(args.file).read_text(encoding="utf-8")
        return sys.stdin.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ScriptgenError(f"cannot read the document text: {error}") from None


async def _add(args: argparse.Namespace) -> int:
    text = _read_text(args)
    async with connect(args) as client:
        document = await client.add_knowledge_document(
            str(args.project),
            kind=args.kind,
            title=str(args.title),
            text=text,
            document_id=str(args.id),
        )
    if args.json:
        print_json(document)
    else:
        out(document.name)
    return 0


async def _list(args: argparse.Namespace) -> int:
    kind = args.kind if args.kind is not None else knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED
    async with connect(args) as client:
        documents = [
            document
            async for document in client.iter_knowledge_documents(
                str(args.project), int(args.page_size), kind=kind
            )
        ]
    if args.json:
        print_json_list("documents", documents)
        return 0
    rows = [
        (
            document.name,
            kind_label(document.kind),
            str(document.character_count),
            timestamp(document.create_time),
            document.title,
        )
        for document in documents
    ]
    print_table(("NAME", "KIND", "CHARACTERS", "CREATED", "TITLE"), rows)
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        document = await client.get_knowledge_document(str(args.document))
    if args.json:
        print_json(document)
        return 0
    note(
        f"{document.name}: {kind_label(document.kind)} {document.title!r},"
        f" {document.character_count} characters in {document.chunk_count} chunks"
    )
    out(document.text, end="" if document.text.endswith("\n") else "\n")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        await client.delete_knowledge_document(str(args.document))
    if args.json:
        print_json({})
    else:
        out(f"deleted {args.document}")
    return 0
