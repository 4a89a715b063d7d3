"""The one error of backups: a message naming the file, record or store at fault."""

from __future__ import annotations

from typing import Final

#: How many problems the text of an error lists; the rest are counted ("and 7 more").
SHOWN_PROBLEMS: Final = 20


class BackupError(Exception):
    """A backup cannot be made, verified or restored; `problems` lists every reason.

    Its text is the message, then (when there is more than the message to say)
    the first `SHOWN_PROBLEMS` problems, one per line, and how many more there are.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or (message,)

    def __str__(self) -> str:
        if self.problems == (self.message,):
            return self.message
        shown = [f"\n  {problem}" for problem in self.problems[:SHOWN_PROBLEMS]]
        hidden = len(self.problems) - SHOWN_PROBLEMS
        if hidden > 0:
            shown.append(f"\n  and {hidden} more")
        return self.message.removesuffix(":") + ":" + "".join(shown)


def one_line(text: str) -> str:
    """`text` on one line, its lines joined by " | " (an error lists one problem per line)."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def problems_of(error: BackupError) -> list[str]:
    """The problems of `error`, each on one line that stands alone, to list among others.

    `str(error)` would nest a multi-line text (its message, then its problems
    indented) inside another error's list, one problem spread over many lines.
    """
    if error.problems == (error.message,):
        return [one_line(error.message)]
    head = one_line(error.message).removesuffix(":")
    return [f"{head}: {one_line(problem)}" for problem in error.problems]
