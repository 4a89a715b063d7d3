"""One episode as a file: the Fountain source with a title page, then FDX, HTML or PDF from it."""

from __future__ import annotations

import html
import io
import re
import threading
from dataclasses import dataclass
from importlib import resources

from screenplain.export import fdx as screenplain_fdx  # type: ignore[import-untyped]
from screenplain.export import html as screenplain_html
from screenplain.export import pdf as screenplain_pdf
from screenplain.parsers import fountain as screenplain_fountain  # type: ignore[import-untyped]
from scriptgen.v1 import project_pb2, project_service_pb2

from server.exports.fonts import PdfFonts, font_settings

ExportFormat = project_service_pb2.ExportFormat


@dataclass(frozen=True, slots=True)
class _Format:
    extension: str
    content_type: str


_FORMATS: dict[int, _Format] = {
    project_service_pb2.EXPORT_FORMAT_FOUNTAIN: _Format("fountain", "text/plain; charset=utf-8"),
    project_service_pb2.EXPORT_FORMAT_FDX: _Format("fdx", "application/xml"),
    project_service_pb2.EXPORT_FORMAT_HTML: _Format("html", "text/html; charset=utf-8"),
    project_service_pb2.EXPORT_FORMAT_PDF: _Format("pdf", "application/pdf"),
}
#: Characters XML 1.0 forbids (models do emit them now and then); dropped from every export.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
#: screenplain writes non-ASCII HTML as numeric references; the page is UTF-8, so undo that.
_NUMERIC_REFERENCE = re.compile(r"&#(\d+);")
_SLUG = re.compile(r"[^a-z0-9]+")
# reportlab's document building is not known to be thread-safe; one PDF at a time.
_pdf_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ExportedFile:
    """A rendered episode."""

    content: bytes
    content_type: str
    filename: str


def file_name(
    project: project_pb2.Project, episode: project_pb2.Episode, fmt: ExportFormat.ValueType
) -> str:
    """`{project}-e{NN}[-{title slug}].{ext}`, ASCII only so every header can carry it."""
    project_id = project.name.removeprefix("projects/") or "episode"
    slug = _SLUG.sub("-", episode.title.lower()).strip("-")[:60].strip("-")
    stem = f"{project_id}-e{episode.number:02d}" + (f"-{slug}" if slug else "")
    return f"{stem}.{_FORMATS[fmt].extension}"


def fountain_source(project: project_pb2.Project, episode: project_pb2.Episode) -> str:
    """The episode's script behind a Fountain title page."""
    title_page = [
        f"Title: {episode.title or project.title}",
        f"Credit: {project.title}, episode {episode.number}",
    ]
    if episode.HasField("create_time"):
        title_page.append(f"Draft date: {episode.create_time.ToDatetime().date().isoformat()}")
    if project.language:
        title_page.append(f"Lang: {project.language}")
    script = _NOT_XML.sub("", episode.script.replace("\r\n", "\n"))
    return "\n".join(_NOT_XML.sub("", line) for line in title_page) + "\n\n" + script


def _html(source: str, project: project_pb2.Project, episode: project_pb2.Episode) -> str:
    screenplay = screenplain_fountain.parse(io.StringIO(source))
    body = io.StringIO()
    screenplain_html.convert_bare(screenplay, body)
    text = _NUMERIC_REFERENCE.sub(
        lambda m: chr(int(m.group(1))) if int(m.group(1)) > 0x7F else m.group(0), body.getvalue()
    )
    css = resources.files("screenplain.export").joinpath("default.css").read_text("utf-8")
    title = html.escape(f"{project.title} — {episode.number}. {episode.title}")
    language = html.escape(project.language or "en", quote=True)
    return (
        f'<!DOCTYPE html>\n<html lang="{language}"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{css}</style></head><body>"
        f'<div id="wrapper" class="screenplay">\n<h1 class="title">{title}</h1>\n'
        f"{text}</div></body></html>\n"
    )


def _pdf(source: str, fonts: PdfFonts) -> bytes:
    screenplay = screenplain_fountain.parse(io.StringIO(source))
    settings = screenplain_pdf.Settings(font_settings=font_settings(source, fonts))
    output = io.BytesIO()
    with _pdf_lock:
        screenplain_pdf.to_pdf(screenplay, output, settings=settings)
    return output.getvalue()


def render(
    project: project_pb2.Project,
    episode: project_pb2.Episode,
    fmt: ExportFormat.ValueType,
    fonts: PdfFonts | None = None,
) -> ExportedFile:
    """The episode in `fmt`; blocking (PDF takes a while): run it in a worker thread.

    Raises ValueError for EXPORT_FORMAT_UNSPECIFIED or an unknown format, and
    FontMissing when a PDF needs a font that is not installed.
    """
    spec = _FORMATS.get(fmt)
    if spec is None:
        raise ValueError(f"unknown export format {fmt}")
    source = fountain_source(project, episode)
    if fmt == project_service_pb2.EXPORT_FORMAT_FOUNTAIN:
        content = source.encode("utf-8")
    elif fmt == project_service_pb2.EXPORT_FORMAT_FDX:
        out = io.StringIO()
        screenplain_fdx.to_fdx(screenplain_fountain.parse(io.StringIO(source)), out)
        content = out.getvalue().encode("utf-8")
    elif fmt == project_service_pb2.EXPORT_FORMAT_HTML:
        content = _html(source, project, episode).encode("utf-8")
    else:
        content = _pdf(source, fonts or PdfFonts())
    return ExportedFile(content, spec.content_type, file_name(project, episode, fmt))
