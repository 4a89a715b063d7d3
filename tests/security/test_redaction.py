"""No secret reaches a log line: records go through the real setup (`server.logs.configure`)
in both formats, and nothing that looks like a key, token, credential or URL password
survives — in the message, extra fields, exception text and tracebacks, or a logged config."""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import CoreConfig, logs
from server.auth import AuthConfig, new_key
from server.config import build_providers
from server.knowledge.settings import KnowledgeConfig

OPENAI_KEY = "sk-proj-Zq3xT9vLm2Rk8NwP4sYb6Hc1"
ANTHROPIC_KEY = "sk-ant-api03-Qw7Er9Ty2Ui4Op6As8Df0Gh-Jk1Lz3Xc"
API_KEY, _ = new_key("alice", ["read"])
JOB_TOKEN = "sgjt.eyJnIjoiZ2VuZXJhdGlvbnMvZzEifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
REDIS_PASSWORD = "r3dis-Pa55word"
DATABASE_PASSWORD = "pg-Pa55word-7"
TOKEN_SECRET = "0123456789abcdef-token-secret"
OTHER_BEARER = "opaque-credential-42"
SECRETS = (
    OPENAI_KEY,
    ANTHROPIC_KEY,
    API_KEY,
    API_KEY.split("_")[-1],
    JOB_TOKEN,
    REDIS_PASSWORD,
    DATABASE_PASSWORD,
    TOKEN_SECRET,
    OTHER_BEARER,
)
REDIS_URL = f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0"
DATABASE_URL = f"postgresql://scriptgen:{DATABASE_PASSWORD}@db.internal:5432/scriptgen"


@pytest.fixture(params=["json", "text"])
def written(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """Logs set up as every process does, in one format, into a buffer."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    logs.configure(request.param, "DEBUG", stream)
    try:
        yield stream
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "scriptgen"]:
            root.removeHandler(handler)
        root.setLevel(level)


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} was logged"
    assert "[redacted]" in text


log = logging.getLogger("tests.security.redaction")


def test_secrets_in_messages_and_extra_fields_are_redacted(written: io.StringIO) -> None:
    log.info("provider keys %s and %s", OPENAI_KEY, ANTHROPIC_KEY)
    log.info("metadata %r", (("authorization", f"Bearer {API_KEY}"),))
    log.info("header Authorization: Bearer %s", OTHER_BEARER)
    log.info("authorization=%s", OTHER_BEARER)
    log.info("GET /v1/generations/g1/events?access_token=%s", JOB_TOKEN)
    log.warning("connecting to %s and %s", REDIS_URL, DATABASE_URL)
    log.info("settings", extra={"redis": REDIS_URL, "headers": {"x-api-key": ANTHROPIC_KEY}})
    text = written.getvalue()
    _assert_clean(text)
    # One line per record. Another test's thread may log into the same root logger meanwhile
    # (an aiosqlite connection closing at DEBUG): only this logger's lines are counted.
    assert text.count("\n") >= 7
    assert len([line for line in text.splitlines() if log.name in line]) == 7
    # What is not secret stays readable.
    assert "cache.internal:6379" in text and "scriptgen:[redacted]@db.internal" in text
    assert "redis://:[redacted]@" in text and "Bearer [redacted]" in text


def test_exception_text_and_tracebacks_are_redacted(written: io.StringIO) -> None:
    def connect() -> None:
        raise ConnectionError(f"could not reach {REDIS_URL} with key {OPENAI_KEY}")

    try:
        try:
            connect()
        except ConnectionError as error:
            raise RuntimeError(f"start failed (Bearer {API_KEY})") from error
    except RuntimeError:
        log.exception("the core could not start")
    text = written.getvalue()
    _assert_clean(text)
    assert "Traceback" in text and "ConnectionError" in text and "RuntimeError" in text
    assert "in connect" in text  # the traceback itself is kept


def test_a_logged_config_shows_no_secret(written: io.StringIO, tmp_path: Path) -> None:
    config = CoreConfig(
        data_dir=tmp_path,
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        providers=build_providers(openai_api_key=OPENAI_KEY, anthropic_api_key=ANTHROPIC_KEY),
        knowledge=KnowledgeConfig(
            chroma_url=f"https://chroma:{DATABASE_PASSWORD}@vectors.internal",
            openai_api_key=OPENAI_KEY,
        ),
        auth=AuthConfig(token_secret=TOKEN_SECRET),
    )
    shown = repr(config)
    for secret in SECRETS:
        assert secret not in shown, f"{secret!r} is in the repr"
    assert "openai" in shown and "anthropic" in shown  # the providers themselves show
    log.info("configuration: %r", config)
    log.info("configuration: %s", "", extra={"config": config})
    for secret in SECRETS:
        assert secret not in written.getvalue()


#: Pieces of secrets, their markers in every case, separators and plain text, and
#: non-ASCII letters that IGNORECASE matches to ASCII ones (the long s, the Kelvin sign).
_PIECES = (
    *("sg_", "SG_", "sgjt.", "sk-", "SK-", "Bearer ", "bearer\t", "BEARER  ", "Basic "),
    *("basic ", "authorization", "Authorization: ", "AUTHORIZATION=", "api_key", "API-KEY"),
    *("apikey", "ApiKey=", "password", "PASSWD", "Secret", "access_token", "REFRESH_TOKEN"),
    *("://", "redis://", "postgresql://u:", "@", ":", "=", '"', "'", " ", ",", "\n", "_"),
    *("abcdefgh", "ABCDEFGH12345678", "0123456789", "-", ".", "/", "x", "Zz9", "[redacted]"),
    *("\u017f", "\u212a", "é"),
)


def test_the_quick_scan_skips_only_text_the_pattern_leaves_alone() -> None:
    """`redact` skips ASCII text holding none of the pattern's marks; what it returns is
    what the whole pattern gives, over 20,000 texts built from secrets' pieces."""
    randomly = random.Random(17)
    redacted = 0
    for _ in range(20_000):
        text = "".join(randomly.choice(_PIECES) for _ in range(randomly.randint(0, 12)))
        expected = logs._SECRETS.sub(logs._replace, text)
        assert logs.redact(text) == expected, text
        redacted += expected != text
    assert 5_000 < redacted < 15_000  # both kinds of text were tried
    assert (
        logs.redact("pa\u017f\u017fword=hunter2") == "pa\u017f\u017fword=[redacted]"
    )  # non-ASCII: the pattern
    assert logs.redact("f0761ded7850468e918f2ea52243d278") == "f0761ded7850468e918f2ea52243d278"
