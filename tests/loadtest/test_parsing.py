"""The SSE parser and the figures, on hand-made frames and timelines."""

from __future__ import annotations

from array import array

import pytest
from scriptgen.loadtest import count_tokens
from scriptgen.loadtest._records import Outcome, StreamRecord
from scriptgen.loadtest._sse import SseParser
from scriptgen.loadtest._stats import (
    distribution,
    inter_token_latencies,
    longest_gap,
    stream_rate,
    timeline,
)

DELTA = b'id: 5\nevent: delta\ndata: {"sequence":"5","textDelta":{"text":"INT. KITCHEN\\n\\n"}}\n\n'


def parse(*chunks: bytes) -> tuple[StreamRecord, list[bool], int]:
    record = StreamRecord(0, "projects/p")
    opened = []
    parser = SseParser(record, lambda: opened.append(1))
    ends = [parser.feed(chunk, float(number)) for number, chunk in enumerate(chunks, 1)]
    return record, ends, len(opened)


def test_tokens_are_words_with_their_whitespace() -> None:
    assert count_tokens("INT. KITCHEN\n\n") == 2
    assert count_tokens("  MAYA\n") == 2
    assert count_tokens("") == 0


def test_frames_split_across_reads_are_put_together() -> None:
    record, ends, opened = parse(b"retry: 3000\n\n" + DELTA[:20], DELTA[20:] + DELTA)
    assert ends == [False, False]
    assert opened == 1
    assert record.first_event == record.first_token == 2.0
    assert list(record.delta_tokens) == [2, 2]
    assert record.tokens == 4
    assert record.events == 2


def test_pings_and_heartbeats_are_not_events_and_crlf_is_accepted() -> None:
    completed = (
        b'event: completed\r\ndata: {"completed":{"episode":{"name":"projects/p/episodes/1",'
        b'"script":"INT. KITCHEN\\n\\n"}}}\r\n\r\n'
    )
    record, ends, _ = parse(b": ping\n\n", b"id: 3\n: ping\n\n", DELTA + completed)
    assert ends == [False, False, True]
    assert record.heartbeats == 1
    assert record.first_event == 3.0
    assert record.outcome is Outcome.COMPLETED
    assert record.episode == "projects/p/episodes/1"
    assert record.episode_tokens == record.tokens == 2


def test_a_crlf_split_between_two_reads_ends_one_line() -> None:
    # Read as "...\r" then "\n...": one line end, not a blank line that ends the frame.
    record, ends, _ = parse(b"event: stage\r", b'\ndata: {"stage": "STAGE_WRITE"}\r\n\r\n')
    assert ends == [False, False]
    assert record.events == 1
    assert record.write_started is not None


def test_a_failed_event_names_its_code() -> None:
    failed = b'event: failed\ndata: {"failed":{"status":{"code":8,"message":"slow down"}}}\n\n'
    record, ends, _ = parse(failed)
    assert ends == [True]
    assert record.outcome is Outcome.FAILED
    assert record.error == "failed event RESOURCE_EXHAUSTED"


def test_inter_token_latency_is_per_token() -> None:
    record = StreamRecord(0, "projects/p")
    record.delta_times = array("d", [10.0, 10.1, 10.4])
    record.delta_tokens = array("I", [1, 1, 3])
    record.tokens = 5
    gaps = inter_token_latencies(record)
    assert [round(g, 6) for g in gaps] == [0.1, 0.1, 0.1, 0.1]
    assert stream_rate(record) == pytest.approx(10.0)  # 4 tokens after the first in 0.4 s
    # The 0.3 s wait before the last delta: per token it reads as 0.1 s, as a stall 0.3 s.
    assert longest_gap(record) == pytest.approx(0.3)
    record.delta_times = record.delta_times[:1]
    assert longest_gap(record) is None


def test_distribution_uses_nearest_rank() -> None:
    figures = distribution(float(n) for n in range(1, 101))
    assert (figures.count, figures.p50, figures.p95, figures.p99, figures.max) == (
        100,
        50.0,
        95.0,
        99.0,
        100.0,
    )
    assert distribution([]).count == 0


def test_timeline_counts_tokens_and_open_streams() -> None:
    record = StreamRecord(0, "projects/p", sent=0.0, ended=1.0)
    record.delta_times = array("d", [0.1, 0.3, 0.9])
    record.delta_tokens = array("I", [1, 2, 3])
    points = timeline([record], 0.0, 1.0)
    assert [p.tokens_per_second for p in points] == [4.0, 8.0, 0.0, 12.0]
    assert [p.open_streams for p in points] == [1, 1, 1, 1]
