"""What every project-store backend shares: times, row → message mapping, and its errors."""

from __future__ import annotations

import json
import time
from typing import TypeVar

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from scriptgen.v1 import project_pb2

from server.auth.records import DEFAULT_TENANT
from server.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable

MessageT = TypeVar("MessageT", bound=Message)

#: How long an idempotency key of CreateProject is remembered.
REQUEST_ID_TTL_SECONDS = 24 * 3600.0


def now_micros() -> int:
    """Now, in microseconds since the Unix epoch (the stores' time unit)."""
    return time.time_ns() // 1000


def timestamp(micros: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def project(
    *,
    project_id: str,
    title: str,
    kind: int,
    logline: str,
    description: str,
    language: str,
    create_time: int,
    update_time: int,
    episode_count: int,
    audience: str = "",
    tone: str = "",
    target_episode_minutes: int = 0,
    status: int = project_pb2.PROJECT_STATUS_ACTIVE,
) -> project_pb2.Project:
    """A Project message from the columns of its row."""
    return project_pb2.Project(
        name=f"projects/{project_id}",
        title=title,
        type=kind,  # type: ignore[arg-type]
        logline=logline,
        description=description,
        language=language,
        create_time=timestamp(create_time),
        update_time=timestamp(update_time),
        episode_count=episode_count,
        audience=audience,
        tone=tone,
        target_episode_minutes=target_episode_minutes,
        status=status,  # type: ignore[arg-type]
    )


def episode(
    *,
    project_id: str,
    number: int,
    title: str,
    script: str,
    outline: str,
    generation: str,
    scene_count: int,
    word_count: int,
    cast_json: str,
    create_time: int,
    character_count: int = 0,
    usage_json: str = "[]",
    prompt_snapshot_json: str = "{}",
    quality_json: str = "{}",
    update_time: int = 0,
) -> project_pb2.Episode:
    """An Episode message from the columns of its row."""
    found = project_pb2.Episode(
        name=f"projects/{project_id}/episodes/{number}",
        number=number,
        title=title,
        script=script,
        outline=outline,
        generation=generation,
        scene_count=scene_count,
        word_count=word_count,
        cast=json.loads(cast_json),
        create_time=timestamp(create_time),
        character_count=character_count,
        usage=[
            json_format.ParseDict(item, project_pb2.ProviderUsage(), ignore_unknown_fields=True)
            for item in json.loads(usage_json)
        ],
        update_time=timestamp(update_time or create_time),
    )
    # "{}" is what episodes saved before these columns hold, and what a list leaves out.
    if prompt_snapshot_json not in ("", "{}"):
        found.prompt_snapshot.CopyFrom(_parse(prompt_snapshot_json, project_pb2.PromptSnapshot()))
    if quality_json not in ("", "{}"):
        found.quality.CopyFrom(_parse(quality_json, project_pb2.QualityReport()))
    return found


def _parse(text: str, message: MessageT) -> MessageT:
    return json_format.Parse(text, message, ignore_unknown_fields=True)


def _json(message: Message) -> str:
    return json.dumps(json_format.MessageToDict(message), ensure_ascii=False, separators=(",", ":"))


def cast_json(episode: project_pb2.Episode) -> str:
    """The episode's cast as stored: a JSON list of names."""
    return json.dumps(list(episode.cast), ensure_ascii=False)


def usage_json(episode: project_pb2.Episode) -> str:
    """The episode's provider usage as stored: a JSON list of ProviderUsage (proto3 JSON)."""
    items = [json_format.MessageToDict(usage) for usage in episode.usage]
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


def prompt_snapshot_json(episode: project_pb2.Episode) -> str:
    """The episode's prompt snapshot as stored (proto3 JSON)."""
    return _json(episode.prompt_snapshot)


def quality_json(episode: project_pb2.Episode) -> str:
    """The episode's quality report as stored (proto3 JSON)."""
    return _json(episode.quality)


def tenant_request_id(tenant: str, request_id: str) -> str:
    """How a request_id is kept: per tenant, so one tenant's keys never meet another's."""
    if not request_id or tenant == DEFAULT_TENANT:
        return request_id
    return f"{tenant}/{request_id}"


def project_not_found(project_id: str) -> NotFound:
    return NotFound("project", f"projects/{project_id}", "PROJECT_NOT_FOUND")


def episode_not_found(project_id: str, number: int) -> NotFound:
    return NotFound("episode", f"projects/{project_id}/episodes/{number}", "EPISODE_NOT_FOUND")


def project_exists(project_id: str) -> AlreadyExists:
    return AlreadyExists(f"project 'projects/{project_id}' already exists", reason="PROJECT_EXISTS")


def project_has_episodes(project_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"project 'projects/{project_id}' has episodes; delete with force to remove them",
        reason="PROJECT_HAS_EPISODES",
    )


def request_id_reused(request_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id!r} was used for a different request",
        reason="REQUEST_ID_REUSED",
    )


def store_unavailable(problem: str) -> Unavailable:
    return Unavailable(f"the project store {problem}", reason="STORE_UNAVAILABLE")
