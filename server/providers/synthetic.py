"""The synthetic provider: an offline, deterministic writer of Fountain screenplays.

It needs no network and no model. The same brief always gives the same text,
written at a configured time to first token and token rate, so demos, tests
and load tests behave like a real model without costing anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncIterator

from scriptgen.v1 import generation_pb2, project_pb2

from server.config import SyntheticConfig
from server.delta_grid import delta_grid, grid_point
from server.providers.base import Brief, Prompt, TokenUsage

_TOKEN = re.compile(r"\S+\s*|\s+")

_CAST = {
    "en": ["MAYA", "JONAH", "DETECTIVE REYES", "ELENA", "THEO", "GRACE", "OLD MAN KIM"],
    "ko": ["@지수", "@민호", "@서연", "@도윤", "@강 형사", "@할머니"],
}
_PLACES = {
    "en": [
        "APARTMENT - KITCHEN",
        "CITY STREET",
        "POLICE STATION",
        "ROOFTOP",
        "DINER",
        "OLD TRAIN YARD",
    ],
    "ko": ["아파트 - 부엌", "골목길", "경찰서", "옥상", "편의점", "한강 다리"],
}
_TIMES = {"en": ["NIGHT", "DAY", "DAWN", "LATER"], "ko": ["밤", "낮", "새벽", "잠시 후"]}
_ACTIONS = {
    "en": [
        "Rain streaks the window. {a} stands very still, listening.",
        "{a} drops a folder on the table. Photographs spill out.",
        "A phone buzzes, face down. Nobody moves to answer it.",
        "{a} and {b} sit across from each other, the silence heavy.",
        "Neon hums. {a} checks the street, then steps inside.",
    ],
    "ko": [
        "창밖으로 빗줄기가 흐른다. {a}, 가만히 귀를 기울인다.",
        "{a}, 탁자 위에 서류철을 내려놓는다. 사진들이 쏟아진다.",
        "엎어 놓은 휴대폰이 진동한다. 아무도 받지 않는다.",
        "{a}와 {b}, 마주 앉아 있다. 무거운 침묵.",
        "네온사인이 웅웅거린다. {a}, 거리를 살피고 안으로 들어선다.",
    ],
}
_LINES = {
    "en": [
        "You said it was over.",
        "It was. Until tonight.",
        "Tell me what you saw. All of it.",
        "I saw what you wanted me to see.",
        "We don't have time for this.",
        "Then make time. Because I'm not leaving.",
        "Everyone in this town owes somebody something.",
        "Not me. Not anymore.",
        "If we do this, there's no going back.",
        "There never was.",
    ],
    "ko": [
        "다 끝났다고 했잖아.",
        "끝났었지. 오늘 밤 전까지는.",
        "네가 본 거, 전부 말해.",
        "네가 보여주고 싶은 것만 봤어.",
        "지금 이럴 시간 없어.",
        "그럼 시간을 내. 난 안 갈 거니까.",
        "이 동네 사람들은 다 누군가한테 빚이 있어.",
        "난 아니야. 이젠 아니야.",
        "이걸 하면 돌이킬 수 없어.",
        "원래 돌아갈 길 같은 건 없었어.",
    ],
}
_TRANSITIONS = ["CUT TO:", "SMASH CUT TO:", "DISSOLVE TO:"]


def _language(project: project_pb2.Project) -> str:
    return "ko" if project.language.lower().startswith("ko") else "en"


def _cue_name(cue: str) -> str:
    return cue.removeprefix("@")


def _seeded(brief: Brief, stage: str) -> random.Random:
    key = "\x1f".join(
        [brief.project.name, brief.title, brief.description, str(brief.episode_number), stage]
    )
    return random.Random(hashlib.sha256(key.encode()).digest())


def plan_outline(brief: Brief) -> str:
    """A numbered beat outline for the episode."""
    rng = _seeded(brief, "plan")
    lang = _language(brief.project)
    cast = rng.sample(_CAST[lang], 3)
    names = [_cue_name(c).title() if lang == "en" else _cue_name(c) for c in cast]
    if lang == "ko":
        beats = [
            f"오프닝: {names[0]}, {brief.title}의 첫 단서를 발견한다.",
            f"갈등: {names[1]}, {names[0]}의 계획에 반대한다.",
            f"전환: {names[2]}의 비밀이 드러난다.",
            "클라이맥스: 선택의 순간, 모두가 대가를 치른다.",
            "엔딩: 다음 회를 향한 새로운 질문.",
        ]
    else:
        beats = [
            f"Cold open: {names[0]} finds the first clue of '{brief.title}'.",
            f"Conflict: {names[1]} pushes back against {names[0]}'s plan.",
            f"Turn: {names[2]}'s secret comes out.",
            "Climax: a choice that costs everyone something.",
            "Button: a new question that pulls into the next episode.",
        ]
    if brief.description:
        beats.insert(1, ("요청: " if lang == "ko" else "Brief: ") + brief.description.strip())
    return "\n".join(f"{i}. {beat}" for i, beat in enumerate(beats, 1)) + "\n"


#: Scenes written when the project sets no target length: a short demo episode.
DEFAULT_SCENES = 4
#: Script lines per page; a page runs about a minute (as in server.fountain).
_LINES_PER_PAGE = 55
#: Lines one synthetic scene takes: heading, action, four exchanges, a transition, blanks.
_LINES_PER_SCENE = 18


def scene_count(project: project_pb2.Project, default_minutes: int = 0) -> int:
    """Scenes to write: about one page per target minute (the project's, else
    `default_minutes`), else DEFAULT_SCENES."""
    minutes = project.target_episode_minutes
    if minutes <= 0:
        minutes = default_minutes
    if minutes <= 0:
        return DEFAULT_SCENES
    return max(1, round(minutes * _LINES_PER_PAGE / _LINES_PER_SCENE))


def write_screenplay(brief: Brief, default_minutes: int = 0) -> str:
    """The episode as a Fountain screenplay, about a page per target minute.

    `default_minutes` is the length when the project sets none (0: DEFAULT_SCENES).
    """
    rng = _seeded(brief, "write")
    lang = _language(brief.project)
    cast = rng.sample(_CAST[lang], 4)
    parts: list[str] = []
    scenes = scene_count(brief.project, default_minutes)
    for scene in range(scenes):
        place = rng.choice(_PLACES[lang])
        heading = "EXT." if "STREET" in place or "ROOF" in place else "INT."
        parts.append(f"{heading} {place} - {rng.choice(_TIMES[lang])}\n\n")
        a, b = rng.sample(cast, 2)
        action = rng.choice(_ACTIONS[lang]).format(a=_cue_name(a), b=_cue_name(b))
        parts.append(f"{action}\n\n")
        lines = rng.sample(_LINES[lang], 4)
        for turn, line in enumerate(lines):
            speaker = a if turn % 2 == 0 else b
            parts.append(f"{speaker}\n{line}\n\n")
        if scene < scenes - 1:
            parts.append(f"{rng.choice(_TRANSITIONS)}\n\n")
    parts.append("> FADE OUT.\n")
    return "".join(parts)


def polish_notes(brief: Brief) -> str:
    """The polish pass's notes on dialogue, tension and twist."""
    if _language(brief.project) == "ko":
        return (
            "대사: 인물마다 말투를 더 분명히 구분하세요.\n"
            "긴장: 두 번째 장면의 침묵을 한 박자 더 끌어 주세요.\n"
            f"반전: '{brief.title}'의 마지막 장면에서 단서의 의미를 뒤집어 보세요.\n"
        )
    return (
        "Dialogue: give each character a more distinct voice.\n"
        "Tension: hold the silence in the second scene one beat longer.\n"
        f"Twist: let the last scene of '{brief.title}' turn the meaning of the first clue.\n"
    )


def tokens(text: str) -> list[str]:
    """Split text into word-sized tokens that concatenate back to it exactly."""
    return _TOKEN.findall(text)


def token_count(text: str) -> int:
    """`len(tokens(text))` without making the tokens: one per word (with the whitespace
    after it), and one for whitespace before the first word. `str.split` and the pattern's
    `\\s` know the same whitespace. A quarter of the regex's time on a prompt: the router
    counts every plan call's prompt and outline this way, in a burst's start."""
    return len(text.split()) + int(text[:1].isspace())


#: Tokens per chunk after the first when the pace is unlimited (tokens_per_second 0): large
#: chunks keep the writer cheap, so a peak-relay run measures the relay, not the generator.
UNPACED_CHUNK_TOKENS = SyntheticConfig().unpaced_chunk_tokens
#: Tokens an unpaced stream hands over per turn of the event loop at most: as many whole
#: chunks as fit (one chunk when a chunk is larger). A model's tokens reach the core many
#: per read of its body, one read per delta cut (`body_pacing`) or per worker frame, and
#: go on without a turn of the loop between them; a turn per one-token chunk was about a
#: third of the write stage's CPU per chunk (BENCHMARKS.md, session 37).
UNPACED_TURN_TOKENS = 32


class SyntheticProvider:
    """Streams the deterministic plan or screenplay at a configured pace.

    Paced writing runs on deadlines: token `i` is due `i / tokens_per_second`
    after the first, and each wake-up yields every token due by then as one
    chunk. A stream wakes at most once per `SyntheticConfig.min_wake_seconds`
    (the core's delta window, so wake-ups the coalescer would join anyway are
    not taken): 30k tok/s over 1000 streams then costs 1000 / window
    timer wake-ups, not 30k. With `min_wake_seconds` 0 every token is its own
    chunk at its own time, as a model's stream would be.
    """

    name = "synthetic"
    model = "synthetic-fountain-1"

    def __init__(self, config: SyntheticConfig) -> None:
        self._config = config

    def _text(self, prompt: Prompt) -> str:
        if prompt.stage == generation_pb2.STAGE_PLAN:
            return plan_outline(prompt.brief)
        if prompt.stage == generation_pb2.STAGE_REVIEW:
            return polish_notes(prompt.brief)
        return write_screenplay(prompt.brief, self._config.episode_minutes)

    async def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        text = self._text(prompt)
        if prompt.partial and text.startswith(prompt.partial):
            text = text[len(prompt.partial) :]  # continuing its own text: pick up where it ended
        # Character offset where each token starts (and the end): chunks are slices of text.
        starts = [0]
        for piece in tokens(text):
            starts.append(starts[-1] + len(piece))
        count = len(starts) - 1
        per_chunk = max(1, self._config.tokens_per_chunk)
        if self._config.first_token_seconds > 0:
            await asyncio.sleep(self._config.first_token_seconds)
        rate = self._config.tokens_per_second
        if rate <= 0:
            # The first chunk is as small as a paced one (a model's first token comes alone).
            step = max(per_chunk, self._config.unpaced_chunk_tokens)
            turn = step * max(1, UNPACED_TURN_TOKENS // step)
            turn_ends = per_chunk  # the first chunk goes alone, as before any other
            index = 0
            while index < count:
                if index >= turn_ends:
                    # Unlimited pace still yields to the loop so other streams keep moving.
                    await asyncio.sleep(0)
                    turn_ends = index + turn
                end = min(count, index + (step if index else per_chunk))
                yield text[starts[index] : starts[end]]
                index = end
            return
        loop = asyncio.get_running_loop()
        min_wake = max(0.0, self._config.min_wake_seconds)
        start = loop.time()
        index = 0
        while index < count:
            now = loop.time()
            end = index + per_chunk
            if min_wake > 0:
                # Every chunk due by now: chunk k is due at start + k * per_chunk / rate.
                end = max(end, (int((now - start) * rate / per_chunk) + 1) * per_chunk)
            end = min(count, end)
            yield text[starts[index] : starts[end]]
            index = end
            if index < count:
                # The last token keeps its own time: the stream ends when a model's would.
                last = start + (count - 1) / rate
                # Wakes fall on the loop clock's grid of `min_wake` (the delta window), as the
                # coalescer's cuts do (server/jobs/coalescer.py): a chunk arrives when its cut
                # is due, rather than setting a timer for it.
                grid = grid_point(now + min_wake, min_wake) if min_wake > 0 else now
                wake = max(start + index / rate, min(grid, last))
                if wake == grid and wake > loop.time():
                    # On a grid point: woken in the grid's turns, a few dozen streams each.
                    await delta_grid().sleep_until(wake)
                elif (delay := wake - loop.time()) > 0:
                    await asyncio.sleep(delay)
