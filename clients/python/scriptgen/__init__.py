"""Scriptgen's Python SDK: a typed async client of the core, with resumable event streams.

    import scriptgen

    async with scriptgen.Client("127.0.0.1:50051") as client:
        project = await client.create_project(title="The Lighthouse")
        async with client.generate(project.name, "Pilot") as stream:
            result = await stream.collect()
        print(result.script)

Messages and stubs generated from the protos live in `scriptgen.v1`.
"""

from scriptgen._client import Client
from scriptgen._config import DEFAULT_TARGET, ClientConfig, RetryPolicy
from scriptgen._errors import (
    ERROR_DOMAIN,
    AlreadyExistsError,
    CallCancelledError,
    ClientClosedError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RPCError,
    ScriptgenError,
    SequenceGapError,
    ServerError,
    StreamError,
    StreamInterruptedError,
    UnauthenticatedError,
    UnavailableError,
)
from scriptgen._script import (
    GenerationResult,
    Outcome,
    ScriptAssembler,
    ScriptMismatchError,
    is_terminal,
)
from scriptgen._stream import GenerationStream

__all__ = [
    "DEFAULT_TARGET",
    "ERROR_DOMAIN",
    "AlreadyExistsError",
    "CallCancelledError",
    "Client",
    "ClientClosedError",
    "ClientConfig",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "GenerationResult",
    "GenerationStream",
    "InvalidArgumentError",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "RPCError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "ScriptAssembler",
    "ScriptMismatchError",
    "ScriptgenError",
    "SequenceGapError",
    "ServerError",
    "StreamError",
    "StreamInterruptedError",
    "UnauthenticatedError",
    "UnavailableError",
    "is_terminal",
]

__version__ = "0.1.0"
