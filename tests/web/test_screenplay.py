"""The page's own modules in Chromium: Fountain laid out the same however the text is
split into chunks, and deltas placed by code-point offset so nothing repeats."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from tests.web.test_page import open_page

FOUNTAIN = """Title: 밤의 병동
Author: Scriptgen

INT. 병원 복도 - 밤

형광등이 깜빡인다. 🩺 지수가 복도를 걷는다.

@지수
(속삭이며)
누구 있어요?

MAYA (V.O.)
You came back.

.FLASHBACK - ROOFTOP

> SMASH CUT TO:

CUT TO:

> THE END <
"""

LAYOUT = """async ([text, sizes]) => {
  const { Screenplay } = await import('/modules/screenplay.js');
  const shapes = [];
  for (const size of sizes) {
    const box = document.createElement('div');
    const view = new Screenplay(box);
    const chars = Array.from(text);
    for (let i = 0; i < chars.length; i += size) view.append(chars.slice(i, i + size).join(''));
    view.end();
    shapes.push([...box.children].map((n) => n.className + '|' + n.textContent).join('\\n'));
  }
  return shapes;
}"""

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_fountain_layout_does_not_depend_on_chunking(page: Page) -> None:
    await open_page(page)
    shapes = await page.evaluate(LAYOUT, [FOUNTAIN, [1, 3, 7, 10000]])
    assert len(set(shapes)) == 1, shapes
    lines = shapes[0].split("\n")
    assert lines[0].startswith("title-page|Title: 밤의 병동")
    assert "scene-heading|INT. 병원 복도 - 밤" in lines
    assert any(line.startswith("action|형광등이 깜빡인다. 🩺") for line in lines)
    assert "dialogue-block|지수(속삭이며)누구 있어요?" in lines
    assert "dialogue-block|MAYA (V.O.)You came back." in lines
    assert "scene-heading|FLASHBACK - ROOFTOP" in lines
    assert "transition|SMASH CUT TO:" in lines
    assert "transition|CUT TO:" in lines
    assert "centered|THE END" in lines


DELTAS = """async (deltas) => {
  const { GenerationFollower } = await import('/modules/follow.js');
  let text = '';
  const follower = new GenerationFollower('generations/x', '/nowhere', {
    onEvent() {}, onText(chunk) { text += chunk; }, onConnection() {}, onEnd() {},
  });
  let sequence = 0;
  for (const [offset, chunk, repeat] of deltas) {
    if (!repeat) sequence += 1;
    const textDelta = { text: chunk, offset: String(offset) };
    const data = JSON.stringify({ sequence: String(sequence), textDelta });
    follower.receive('delta', { data });
  }
  return [text, follower.length, follower.gaps];
}"""


async def test_deltas_are_placed_by_code_point_offset(page: Page) -> None:
    await open_page(page)
    # "🎬" is one code point but two UTF-16 units: offsets after it count it once.
    deltas = [
        [0, "🎬 INT. ", False],
        [0, "🎬 INT. ", True],  # the same event again after a reconnect: same sequence
        [7, "ROOF", False],
        [9, "OFTOP 🌙", False],  # overlaps what is already shown by two code points
        [16, " - NIGHT", False],
    ]
    text, length, gaps = await page.evaluate(DELTAS, deltas)
    assert text == "🎬 INT. ROOFTOP 🌙 - NIGHT"
    assert length == len(text)
    assert gaps == 0
