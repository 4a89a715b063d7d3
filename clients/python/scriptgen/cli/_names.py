"""Resource names typed by people: accept the short forms, send the full AIP-122 names."""

from __future__ import annotations

import argparse
import re

_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_PROJECT = re.compile(rf"(?:projects/)?({_ID})")
_EPISODE = re.compile(rf"(?:projects/)?({_ID})(?:/episodes/|/|:)(\d+)")
_GENERATION = re.compile(rf"(?:generations/)?({_ID})")


def project_name(text: str) -> str:
    """`projects/{project}` from itself or a bare project id."""
    match = _PROJECT.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a project name: {text!r} (projects/ID or ID)")
    return f"projects/{match.group(1)}"


def episode_name(text: str) -> str:
    """`projects/{project}/episodes/{number}` from itself or `PROJECT/NUMBER`."""
    match = _EPISODE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not an episode name: {text!r} (projects/ID/episodes/N or ID/N)"
        )
    return f"projects/{match.group(1)}/episodes/{match.group(2)}"


def generation_name(text: str) -> str:
    """`generations/{generation}` from itself or a bare job id."""
    match = _GENERATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a generation name: {text!r}")
    return f"generations/{match.group(1)}"
