"""Fonts the PDF export embeds: screenplain's Courier Prime, or a Hangul-capable one when needed.

reportlab keeps registered fonts in a process-wide table, so each family is
registered once, under a lock, and reused by every export after that.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from reportlab.pdfbase import pdfmetrics  # type: ignore[import-untyped]
from screenplain.export import pdf as screenplain_pdf  # type: ignore[import-untyped]

_NANUM = Path("/usr/share/fonts/truetype/nanum")
#: The family name the wide font is registered under in reportlab.
WIDE_FAMILY = "ScriptgenWide"
_lock = threading.Lock()
_registered: dict[str, object] = {}


class FontMissing(Exception):
    """No installed font can show the script's characters."""


@dataclass(frozen=True, slots=True)
class PdfFonts:
    """Where to find a TrueType font for scripts beyond Latin-1 (Korean, among others).

    The first existing file of each list is used; monospaced NanumGothicCoding
    keeps the typewriter look a screenplay expects. (Noto Sans CJK is no use
    here: reportlab cannot embed its PostScript outlines.)
    """

    wide_regular: tuple[Path, ...] = (
        _NANUM / "NanumGothicCoding.ttf",
        _NANUM / "NanumGothic.ttf",
    )
    wide_bold: tuple[Path, ...] = (
        _NANUM / "NanumGothicCodingBold.ttf",
        _NANUM / "NanumGothicBold.ttf",
    )

    def wide_files(self) -> tuple[Path, Path]:
        """The regular and bold files of the wide font; FontMissing when none is installed."""
        regular = next((path for path in self.wide_regular if path.is_file()), None)
        if regular is None:
            raise FontMissing(
                "no font with Hangul glyphs is installed for the PDF export; install Debian's"
                f" fonts-nanum (looked for {', '.join(str(p) for p in self.wide_regular)})"
            )
        bold = next((path for path in self.wide_bold if path.is_file()), regular)
        return regular, bold


def needs_wide_font(text: str) -> bool:
    """Whether `text` has characters beyond Latin-1, which Courier Prime lacks."""
    return any(ord(ch) > 0xFF for ch in text)


def font_settings(text: str, fonts: PdfFonts) -> object:
    """screenplain FontSettings for `text`, its font registered with reportlab."""
    if not needs_wide_font(text):
        key, files = "courier", None
    else:
        regular, bold = fonts.wide_files()
        key, files = f"{WIDE_FAMILY}:{regular}:{bold}", (regular, bold)
    with _lock:
        settings = _registered.get(key)
        if settings is None:
            if files is None:
                settings = screenplain_pdf.get_courier_prime_settings()
            else:
                # One family per file pair: reportlab names must stay unique.
                family = f"{WIDE_FAMILY}{len(_registered)}"
                settings = screenplain_pdf.FontSettings(family)
                settings.file_normal = str(files[0])
                settings.file_bold = str(files[1])
                settings.file_italic = str(files[0])
                settings.file_bold_italic = str(files[1])
                settings.register()
            _registered[key] = settings
    return settings


def registered_families() -> list[str]:
    """Font families reportlab knows (for tests and diagnostics)."""
    return sorted(pdfmetrics.getRegisteredFontNames())
