"""Episode exports: every format opens as what it claims to be, Korean text intact."""

from __future__ import annotations

import html.parser
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pypdf
import pytest
from google.protobuf import timestamp_pb2
from scriptgen.v1 import project_pb2
from scriptgen.v1 import project_service_pb2 as ps

from server import exports
from server.exports.fonts import needs_wide_font
from server.fountain import review

KOREAN_SCRIPT = (
    "INT. 아파트 - 부엌 - 밤\n\n창밖으로 빗줄기가 흐른다. 지수, 가만히 귀를 기울인다.\n\n"
    "@지수\n다 끝났다고 했잖아.\n\n@민호\n끝났었지. 오늘 밤 전까지는.\n\nCUT TO:\n\n"
    "EXT. 옥상 - 새벽\n\n@강 형사\n이걸 하면 돌이킬 수 없어 & 알지?\n\n> FADE OUT.\n"
)
ENGLISH_SCRIPT = (
    "INT. DINER - NIGHT\n\nGrace stirs her coffee. Rain on the glass.\n\n"
    "GRACE\nYou came back.\n\nTHEO\nI never left <not once>.\n\nCUT TO:\n\n"
    "EXT. ROOFTOP - DAWN\n\nThey watch the city wake.\n\n> FADE OUT.\n"
)


def _episode(script: str, title: str = "Pilot") -> project_pb2.Episode:
    return project_pb2.Episode(
        name="projects/night-shift/episodes/3",
        number=3,
        title=title,
        script=script,
        create_time=timestamp_pb2.Timestamp(seconds=1_750_000_000),
    )


KOREAN = (
    project_pb2.Project(name="projects/night-shift", title="밤 근무", language="ko"),
    _episode(KOREAN_SCRIPT, "첫 번째 밤"),
)
ENGLISH = (
    project_pb2.Project(name="projects/night-shift", title="Night Shift", language="en"),
    _episode(ENGLISH_SCRIPT, "The Long Night"),
)


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.lang = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.lang = dict(attrs).get("lang") or ""

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _pdf_fonts(reader: pypdf.PdfReader) -> list[dict[str, Any]]:
    fonts: list[dict[str, Any]] = []
    for page in reader.pages:
        resources: Any = page["/Resources"]
        for font in resources["/Font"].values():
            resolved = font.get_object()
            fonts.extend(d.get_object() for d in resolved.get("/DescendantFonts", []))
            fonts.append(resolved)
    return fonts


@pytest.mark.parametrize(("project", "episode"), [KOREAN, ENGLISH], ids=["ko", "en"])
def test_fountain_export_is_the_script_behind_a_title_page(
    project: project_pb2.Project, episode: project_pb2.Episode
) -> None:
    exported = exports.render(project, episode, ps.EXPORT_FORMAT_FOUNTAIN)
    text = exported.content.decode("utf-8")
    assert exported.content_type == "text/plain; charset=utf-8"
    assert text.startswith(f"Title: {episode.title}\n")
    assert text.endswith(episode.script)
    assert f"Lang: {project.language}" in text


@pytest.mark.parametrize(("project", "episode"), [KOREAN, ENGLISH], ids=["ko", "en"])
def test_fdx_is_well_formed_with_the_scripts_paragraphs(
    project: project_pb2.Project, episode: project_pb2.Episode
) -> None:
    exported = exports.render(project, episode, ps.EXPORT_FORMAT_FDX)
    assert exported.content_type == "application/xml"
    assert exported.filename.endswith(".fdx")
    root = ET.fromstring(exported.content)
    assert root.tag == "FinalDraft"
    paragraphs = [
        (p.get("Type"), "".join(t.text or "" for t in p.iter("Text")).strip())
        for p in root.iter("Paragraph")
    ]
    kinds = [kind for kind, _ in paragraphs]
    assert kinds.count("Scene Heading") == 2
    cues = review(episode.script).dialogue_count
    assert kinds.count("Character") == kinds.count("Dialogue") == cues > 0
    assert kinds.count("Transition") == 2
    if project.language == "ko":
        assert ("Scene Heading", "INT. 아파트 - 부엌 - 밤") in paragraphs
        assert ("Character", "지수") in paragraphs
        assert ("Dialogue", "이걸 하면 돌이킬 수 없어 & 알지?") in paragraphs
    else:
        assert ("Dialogue", "I never left <not once>.") in paragraphs


@pytest.mark.parametrize(("project", "episode"), [KOREAN, ENGLISH], ids=["ko", "en"])
def test_html_is_a_utf8_page_with_the_script(
    project: project_pb2.Project, episode: project_pb2.Episode
) -> None:
    exported = exports.render(project, episode, ps.EXPORT_FORMAT_HTML)
    assert exported.content_type == "text/html; charset=utf-8"
    page = exported.content.decode("utf-8")
    assert '<meta charset="utf-8">' in page
    parser = _Text()
    parser.feed(page)
    text = "".join(parser.parts)
    assert parser.lang == project.language
    for line in episode.script.splitlines():
        cue = line.removeprefix("@").removeprefix("> ")
        if cue:
            assert cue in text, cue
    if project.language == "ko":
        assert "다 끝났다고 했잖아." in page  # real UTF-8, not character references


@pytest.mark.parametrize(("project", "episode"), [KOREAN, ENGLISH], ids=["ko", "en"])
def test_pdf_parses_has_pages_text_and_an_embedded_font(
    project: project_pb2.Project, episode: project_pb2.Episode
) -> None:
    exported = exports.render(project, episode, ps.EXPORT_FORMAT_PDF)
    assert exported.content_type == "application/pdf"
    assert exported.filename == "night-shift-e03" + (
        ".pdf" if project.language == "ko" else "-the-long-night.pdf"
    )
    reader = pypdf.PdfReader(io.BytesIO(exported.content))
    assert len(reader.pages) >= 2  # the title page, then the script
    text = "\n".join(page.extract_text() for page in reader.pages)
    for line in ("INT.", "CUT TO:"):
        assert line in text
    if project.language == "ko":
        for line in ("아파트 - 부엌 - 밤", "다 끝났다고 했잖아.", "지수", "밤 근무"):
            assert line in text
    embedded = [
        font for font in _pdf_fonts(reader) if "/FontFile2" in font.get("/FontDescriptor", {})
    ]
    assert embedded, "the PDF must embed its TrueType font"


def test_long_scripts_run_over_many_pages() -> None:
    project = ENGLISH[0]
    long_episode = _episode(ENGLISH_SCRIPT.replace("> FADE OUT.\n", "CUT TO:\n\n") * 30)
    exported = exports.render(project, long_episode, ps.EXPORT_FORMAT_PDF)
    assert len(pypdf.PdfReader(io.BytesIO(exported.content)).pages) > 5


def test_a_korean_pdf_without_a_hangul_font_says_what_to_install(tmp_path: Path) -> None:
    project, episode = KOREAN
    nowhere = exports.PdfFonts(wide_regular=(tmp_path / "none.ttf",), wide_bold=())
    with pytest.raises(exports.FontMissing, match="fonts-nanum"):
        exports.render(project, episode, ps.EXPORT_FORMAT_PDF, nowhere)
    # An English script needs no such font.
    project, episode = ENGLISH
    assert exports.render(project, episode, ps.EXPORT_FORMAT_PDF, nowhere).content[:4] == b"%PDF"


def test_xml_forbidden_characters_are_dropped() -> None:
    project = ENGLISH[0]
    dirty = _episode("INT. LAB - DAY\n\nA beep\x07 and a form feed\x0c.\n")
    root = ET.fromstring(exports.render(project, dirty, ps.EXPORT_FORMAT_FDX).content)
    assert "A beep and a form feed." in "".join(root.itertext())


def test_unspecified_format_is_refused() -> None:
    project, episode = ENGLISH
    with pytest.raises(ValueError, match="format"):
        exports.render(project, episode, ps.EXPORT_FORMAT_UNSPECIFIED)


def test_wide_font_is_needed_beyond_latin_1() -> None:
    assert needs_wide_font("지수") and needs_wide_font("“quoted”")
    assert not needs_wide_font("Café, naïve — no: ASCII and Latin-1 only".replace("—", "-"))
