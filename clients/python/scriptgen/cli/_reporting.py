"""Showing a job's events as they arrive: the script on stdout, everything else on stderr."""

from __future__ import annotations

from scriptgen._script import ScriptAssembler
from scriptgen.cli._output import error_line, note, out, print_json_line
from scriptgen.v1 import generation_pb2

#: Exit status of a job that failed or was cancelled by someone else.
EXIT_JOB_FAILED = 1


def stage_label(stage: generation_pb2.Stage.ValueType) -> str:
    """`plan`, `write`, ... for people."""
    return generation_pb2.Stage.Name(stage).removeprefix("STAGE_").lower()


class EventReporter:
    """Writes each event where it belongs and knows the exit status once the job ended.

    The script streams to stdout untouched, so `scriptgen generate ... > ep1.fountain`
    saves exactly the screenplay; stages, progress and notices go to stderr.
    With `json` every event is one JSON line on stdout instead.
    """

    def __init__(self, *, json: bool, quiet: bool = False, partial: bool = False) -> None:
        self._json = json
        self._quiet = quiet
        self._assembler = ScriptAssembler(partial=partial)
        self._progress = ""
        self.exit_status: int | None = None

    @property
    def script(self) -> str:
        """The script written so far."""
        return self._assembler.script

    def report(self, event: generation_pb2.GenerationEvent) -> None:
        """Show one event (in sequence order)."""
        text = self._assembler.feed(event)
        if self._json:
            print_json_line(event)
        elif text:
            out(text, end="")
        kind = event.WhichOneof("kind")
        if kind == "completed":
            self.exit_status = 0
        elif kind in ("failed", "cancelled"):
            self.exit_status = EXIT_JOB_FAILED
        if not self._json:
            self._describe(event)

    def _note(self, line: str) -> None:
        if not self._quiet:
            note(line)

    def _describe(self, event: generation_pb2.GenerationEvent) -> None:
        kind = event.WhichOneof("kind")
        if kind == "queued":
            providers = ", ".join(event.queued.providers) or "default"
            self._note(f"queued {event.generation} (providers: {providers})")
            if event.queued.notice:
                self._note(f"note: {event.queued.notice}")
        elif kind == "stage_started":
            stage = event.stage_started
            using = "/".join(part for part in (stage.provider, stage.model) if part)
            self._note(f"» {stage_label(stage.stage)}" + (f" ({using})" if using else ""))
        elif kind == "progress":
            progress = event.progress
            # Progress arrives often; repeating an unchanged line would drown the stages.
            if progress.message and progress.message != self._progress:
                self._progress = progress.message
                self._note(
                    f"  {stage_label(progress.stage)} {progress.fraction:.0%}: {progress.message}"
                )
        elif kind == "provider_switched":
            switch = event.provider_switched
            self._note(
                f"! {switch.from_provider} → {switch.to_provider} at offset {switch.offset}:"
                f" {switch.reason}"
            )
        elif kind in ("completed", "failed", "cancelled"):
            self._finish(event)

    def _finish(self, event: generation_pb2.GenerationEvent) -> None:
        script = self._assembler.script
        if script and not script.endswith("\n"):
            out()  # keep the shell prompt off the last line of the script
        result = self._assembler.result()
        if result.outcome == "completed" and result.episode is not None:
            episode = result.episode
            self._note(
                f"saved {episode.name}: episode {episode.number}, {episode.scene_count} scenes,"
                f" {episode.word_count} words"
            )
        elif result.error is not None:
            note(f"scriptgen: job failed: {error_line(result.error)}")
        else:
            note(f"scriptgen: job cancelled: {result.cancel_reason or 'no reason given'}")
