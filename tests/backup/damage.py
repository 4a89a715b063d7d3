"""Ways to damage a backup's file, for the tests that check verify and restore name them."""

from __future__ import annotations

from pathlib import Path


def flip_byte(path: Path) -> None:
    """One bit changed in the middle of the file."""
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))


def truncate(path: Path) -> None:
    """The second half of the file gone."""
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def remove(path: Path) -> None:
    """The file gone."""
    path.unlink()
