"""Episode exports: Fountain, Final Draft (FDX), HTML and PDF, rendered with screenplain.

`render(episode, project, format)` answers an `ExportedFile` (bytes, media
type, file name). Every format starts from the episode's Fountain text with a
title page; screenplain parses it and writes FDX, HTML and PDF, so no
screenplay layout is written by hand here. PDF embeds a TrueType font: Courier
Prime (bundled with screenplain) for Latin text, a Hangul-capable monospaced
font (NanumGothicCoding from Debian's fonts-nanum) when the script needs one.
"""

from server.exports.files import ExportedFile, ExportFormat, file_name, render
from server.exports.fonts import FontMissing, PdfFonts

__all__ = ["ExportFormat", "ExportedFile", "FontMissing", "PdfFonts", "file_name", "render"]
