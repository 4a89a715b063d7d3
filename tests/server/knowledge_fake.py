"""A story-knowledge stand-in for pipeline tests: fixed passages, a record of what was indexed."""

from __future__ import annotations

from dataclasses import dataclass, field

from scriptgen.v1 import project_pb2


@dataclass(frozen=True)
class FakePassage:
    """A retrieved passage, shaped like server.knowledge.Passage."""

    source: str
    title: str
    kind: str
    text: str
    score: float


@dataclass
class FakeKnowledge:
    """Answers `passages` to every retrieval; remembers queries and indexed episodes."""

    passages: list[FakePassage] = field(default_factory=list)
    queries: list[tuple[str, str, int]] = field(default_factory=list)
    indexed: list[tuple[str, project_pb2.Episode]] = field(default_factory=list)
    fail_indexing: bool = False

    async def index_episode(self, project_id: str, episode: project_pb2.Episode) -> None:
        if self.fail_indexing:
            raise RuntimeError("chroma is down")
        self.indexed.append((project_id, episode))

    async def retrieve(
        self, project_id: str, query: str, *, token_budget: int
    ) -> list[FakePassage]:
        self.queries.append((project_id, query, token_budget))
        return list(self.passages)
