"""The one error of backups: a message naming the file, record or store at fault."""

from __future__ import annotations


class BackupError(Exception):
    """A backup cannot be made, verified or restored; `problems` lists every reason."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)
