"""Schemathesis against /openapi.json: no 5xx, no answer that breaks the schema.

Every operation gets a bounded number of generated requests (valid and
invalid), sent with a real key to a real gateway and core.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from tests.fuzz.conftest import Live

EXAMPLES_PER_OPERATION = 25


def _schema(live: Live) -> schemathesis.BaseSchema:
    document = requests.get(f"{live.http}/openapi.json", timeout=10).json()
    return schemathesis.openapi.from_dict(document)


def test_no_operation_answers_5xx_or_off_schema(live: Live) -> None:
    schema = _schema(live)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) > 20
    session = requests.Session()
    headers = {"Authorization": f"Bearer {live.key}"}
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), stream=st.booleans())
        def exercise(case: schemathesis.Case[Any], stream: bool) -> None:
            call_headers = dict(headers)
            if stream:
                call_headers["Accept"] = "text/event-stream"
            response = case.call(
                base_url=live.http, session=session, headers=call_headers, timeout=30
            )
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            if "text/event-stream" not in response.headers.get("Content-Type", ""):
                case.validate_response(
                    response,
                    checks=[
                        checks.not_a_server_error,
                        checks.status_code_conformance,
                        checks.content_type_conformance,
                        checks.response_schema_conformance,
                    ],
                )

        try:
            exercise()
        except Exception as error:  # name the operation that failed
            pytest.fail(f"{operation.method.upper()} {operation.path}: {error}")
