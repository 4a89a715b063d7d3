"""Documented input limits and resource-name parsing; every violation names its field.

| field                                   | limit                                          |
|-----------------------------------------|------------------------------------------------|
| project.title, generation title         | 1..200 characters, no control characters       |
| project.logline                         | up to 500 characters                           |
| project.description, generation description | up to 5000 characters                      |
| project.language                        | BCP-47 tag, up to 35 characters (default "en") |
| project.audience                        | up to 200 characters                           |
| project.tone                            | up to 500 characters                           |
| project.target_episode_minutes          | 0 (the type's default) or 1..180               |
| project.status, project.type            | a known enum value (UNSPECIFIED: the default)  |
| project_id, generation id               | `[a-z][a-z0-9-]{0,62}`                         |
| episode id                              | a positive integer up to 2^31-1                |
| request_id                              | up to 100 characters of `[A-Za-z0-9_.-]`       |
| page_size                               | 0..1000 (0 means 50)                           |
| page_token                              | an unmodified `next_page_token`                |
| after_sequence                          | 0..the job's last sequence                     |
| any gRPC request message                | 4 MiB (CoreConfig.max_message_bytes)           |

A request message over 4 MiB is INVALID_ARGUMENT (field `request`) like any
other violation: the transport takes messages up to four times that
(`transport_message_max`), so our code sees them and refuses them itself;
beyond that gRPC refuses them (RESOURCE_EXHAUSTED) before any code of ours runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.errors import FieldViolation, InvalidArgument, invalid

TITLE_MAX = 200
LOGLINE_MAX = 500
DESCRIPTION_MAX = 5000
LANGUAGE_MAX = 35
AUDIENCE_MAX = 200
TONE_MAX = 500
TARGET_EPISODE_MINUTES_MAX = 180
REQUEST_ID_MAX = 100
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 1000
EPISODE_NUMBER_MAX = 2**31 - 1
#: Digits of EPISODE_NUMBER_MAX; more (past leading zeros) are out of range before int()
#: is asked, which refuses text of over 4300 digits with a ValueError.
_EPISODE_NUMBER_DIGITS = len(str(EPISODE_NUMBER_MAX))
#: The transport's receive limit is this many times the documented message limit.
TRANSPORT_MESSAGE_FACTOR = 4


def transport_message_max(message_max: int) -> int:
    """The gRPC transport's receive limit for a documented message limit of `message_max`."""
    return message_max * TRANSPORT_MESSAGE_FACTOR


def mebibytes(size: int) -> str:
    """`4 MiB`, or the bytes when not a whole number of MiB."""
    return f"{size // 2**20} MiB" if size % 2**20 == 0 else f"{size} bytes"


_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_title(field: str, value: str, violations: list[FieldViolation]) -> None:
    """A required one-line title."""
    if not value.strip():
        violations.append(FieldViolation(field, "is required"))
    elif len(value) > TITLE_MAX:
        violations.append(FieldViolation(field, f"must be at most {TITLE_MAX} characters"))
    elif _CONTROL.search(value):
        violations.append(FieldViolation(field, "must not contain control characters"))


def check_text(field: str, value: str, limit: int, violations: list[FieldViolation]) -> None:
    """Optional free text: newlines and tabs allowed, other control characters not."""
    if len(value) > limit:
        violations.append(FieldViolation(field, f"must be at most {limit} characters"))
    elif _CONTROL_EXCEPT_WHITESPACE.search(value):
        violations.append(FieldViolation(field, "must not contain control characters"))


def check_language(field: str, value: str, violations: list[FieldViolation]) -> None:
    """An optional BCP-47 language tag such as `en`, `ko` or `pt-BR`."""
    if not value:
        return
    if len(value) > LANGUAGE_MAX or not _LANGUAGE.fullmatch(value):
        violations.append(
            FieldViolation(field, "must be a BCP-47 language tag such as 'en' or 'ko'")
        )


def check_request_id(field: str, value: str, violations: list[FieldViolation]) -> None:
    """An optional idempotency key."""
    if value and not _REQUEST_ID.fullmatch(value):
        violations.append(
            FieldViolation(field, f"must be 1..{REQUEST_ID_MAX} characters of [A-Za-z0-9_.-]")
        )


def check_id(field: str, value: str, violations: list[FieldViolation]) -> None:
    """An optional client-chosen resource id."""
    if value and not _ID.fullmatch(value):
        violations.append(FieldViolation(field, "must match [a-z][a-z0-9-]{0,62}"))


def raise_if(violations: list[FieldViolation]) -> None:
    """Raise InvalidArgument naming every violation, if any."""
    if violations:
        raise InvalidArgument(violations)


def page_size(field: str, value: int) -> int:
    """The effective page size, or INVALID_ARGUMENT when out of range."""
    if value < 0 or value > PAGE_SIZE_MAX:
        raise invalid(field, f"must be between 0 and {PAGE_SIZE_MAX}")
    return value or PAGE_SIZE_DEFAULT


@dataclass(frozen=True, slots=True)
class EpisodeName:
    """A parsed `projects/{project}/episodes/{episode}`."""

    project: str
    number: int

    @property
    def project_name(self) -> str:
        return f"projects/{self.project}"


def project_id(field: str, name: str) -> str:
    """The id of `projects/{project}`, or INVALID_ARGUMENT naming `field`."""
    prefix, _, rest = name.partition("/")
    if prefix != "projects" or not _ID.fullmatch(rest):
        raise invalid(field, "must be a project name like 'projects/{project}'")
    return rest


def generation_id(field: str, name: str) -> str:
    """The id of `generations/{generation}`, or INVALID_ARGUMENT naming `field`."""
    prefix, _, rest = name.partition("/")
    if prefix != "generations" or not _ID.fullmatch(rest):
        raise invalid(field, "must be a generation name like 'generations/{generation}'")
    return rest


def episode_name(field: str, name: str) -> EpisodeName:
    """Parse `projects/{project}/episodes/{number}`, or INVALID_ARGUMENT naming `field`."""
    parts = name.split("/")
    problem = "must be an episode name like 'projects/{project}/episodes/{number}'"
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "episodes":
        raise invalid(field, problem)
    if not _ID.fullmatch(parts[1]) or not parts[3].isascii() or not parts[3].isdigit():
        raise invalid(field, problem)
    digits = parts[3].lstrip("0")
    number = int(digits) if 0 < len(digits) <= _EPISODE_NUMBER_DIGITS else 0
    if not 1 <= number <= EPISODE_NUMBER_MAX:
        raise invalid(field, f"{problem}, its number 1..{EPISODE_NUMBER_MAX}")
    return EpisodeName(parts[1], number)
