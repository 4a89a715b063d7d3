"""`scriptgen serve|server|gateway`: run the core, the gateway, or both in one process.

The server and gateway packages are imported only here, inside the
commands, so that the SDK and the client commands never load them.
Each process runs until SIGINT or SIGTERM, then stops gracefully — the
gateway first, so no new HTTP stream reaches a core that is draining — and
exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from scriptgen._errors import ScriptgenError
from scriptgen.cli._loop import add_event_loop_argument
from scriptgen.cli._options import ConfigurationError, EnvSwitch, set_command
from scriptgen.cli._output import out
from scriptgen.cli._signals import StopSignals, is_own_command

if TYPE_CHECKING:
    from gateway import GatewayConfig, GatewayServer
    from server import Core, CoreConfig

_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


#: Builds a command's real parser when that command is chosen.
FlagParser = Callable[[Mapping[str, str]], argparse.ArgumentParser]

SettingsT = TypeVar("SettingsT")


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `serve`, `server` and `gateway`; their flags are declared only when chosen."""
    for name, summary, command, flags in (
        ("serve", "run the core and the gateway together", _serve, serve_parser),
        ("server", "run the gRPC core only", _server, server_parser),
        ("gateway", "run the HTTP/SSE gateway only", _gateway, gateway_parser),
    ):
        # Declaring the flags needs the server and gateway packages; loading them
        # for every `scriptgen projects list` would be slow, so `main` builds the
        # real parser (and its --help) only once the command is chosen.
        placeholder = commands.add_parser(name, help=summary, add_help=False)
        set_command(placeholder, command)
        placeholder.set_defaults(flag_parser=flags)


def serve_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The flags of `scriptgen serve`: the core's and the gateway's."""
    from gateway import config as gateway_config
    from server import config as core_config
    from server import logs

    parser = argparse.ArgumentParser(
        prog="scriptgen serve",
        description="Run the gRPC core and the HTTP/SSE gateway in one process with embedded"
        " defaults. The gateway talks to the core at the core's actual port, so port 0 works.",
    )
    core_config.add_arguments(parser, environ)
    gateway_config.add_arguments(parser, environ)
    logs.add_arguments(parser, environ)
    add_event_loop_argument(parser, environ)
    return parser


def server_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The flags of `scriptgen server`."""
    from server import config as core_config
    from server import logs

    parser = argparse.ArgumentParser(prog="scriptgen server", description="Run the gRPC core.")
    core_config.add_arguments(parser, environ)
    logs.add_arguments(parser, environ)
    add_event_loop_argument(parser, environ)
    return parser


def gateway_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The flags of `scriptgen gateway`."""
    from gateway import config as gateway_config
    from server import logs

    parser = argparse.ArgumentParser(
        prog="scriptgen gateway", description="Run the HTTP/SSE gateway in front of a core."
    )
    gateway_config.add_arguments(parser, environ)
    logs.add_arguments(parser, environ)
    add_event_loop_argument(parser, environ)
    parser.add_argument(
        "--workers",
        type=int,
        default=environ.get("SCRIPTGEN_GATEWAY_WORKERS", "1"),
        help="gateway processes sharing the HTTP port (SO_REUSEPORT), e.g. one per CPU"
        " [SCRIPTGEN_GATEWAY_WORKERS] (default: %(default)s)",
    )
    parser.add_argument(
        "--reuse-port",
        action=EnvSwitch,
        variable="SCRIPTGEN_REUSE_PORT",
        environ=environ,
        help="listen with SO_REUSEPORT, sharing the port with other gateway processes"
        " [SCRIPTGEN_REUSE_PORT]",
    )
    # Set by --workers' supervisor for each worker (scriptgen.cli._workers): the folder the
    # workers share their metrics through, and this worker's name, its `worker` label.
    parser.add_argument("--worker-metrics-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker-name", default="", help=argparse.SUPPRESS)
    return parser


def _host(address: str) -> str:
    host, _, _ = address.rpartition(":")
    return host


def local_host(address: str) -> str:
    """A host a local client can reach a server bound to `address` at."""
    host = _host(address)
    return "127.0.0.1" if host in _WILDCARD_HOSTS else host


def _print_endpoints(
    *, grpc: str | None = None, http: str | None = None, metrics: str | None = None
) -> None:
    out("scriptgen is running")
    if grpc is not None:
        out(f"  gRPC     {grpc}")
    if http is not None:
        out(f"  HTTP     {http}")
    if metrics is not None:
        out(f"  metrics  {metrics}")
    out("Press Ctrl-C to stop.")


class StartupError(ScriptgenError):
    """The core or the gateway could not start, e.g. because its address is taken."""


@asynccontextmanager
async def _running_core(settings: CoreConfig) -> AsyncIterator[Core]:
    from server import Core
    from server.errors import ServiceError

    try:
        # Building it loads the providers' TLS context: a bad SSL_CERT_FILE is an OSError.
        core = Core(settings)
    except OSError as error:
        raise StartupError(f"the core could not start: {error}") from error
    try:
        await core.start()
    except (OSError, RuntimeError, ServiceError) as error:
        # Release whatever start() opened before it failed, or the process cannot exit.
        with contextlib.suppress(Exception):
            await core.stop()
        raise StartupError(f"the core could not start: {error}") from error
    try:
        yield core
    finally:
        await core.stop()


@asynccontextmanager
async def _running_gateway(settings: GatewayConfig) -> AsyncIterator[GatewayServer]:
    from gateway import GatewayServer

    gateway = GatewayServer(settings)
    try:
        await gateway.start()
    except (OSError, RuntimeError) as error:
        raise StartupError(f"the gateway could not start: {error}") from error
    try:
        yield gateway
    finally:
        await gateway.stop()


def _check_address_free(who: str, host: str, port: int) -> None:
    """StartupError when host:port is already taken (another process listens there).

    Only that is decided here; any other trouble is left to the real bind. Bound
    with SO_REUSEADDR as aiohttp binds, so a port in TIME_WAIT still counts as free.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return
            # Worded as asyncio words the gateway's own bind failure.
            taken = OSError(
                error.errno,
                f"error while attempting to bind on address {(host, port)!r}:"
                f" {(error.strerror or 'address already in use').lower()}",
            )
            raise StartupError(f"the {who} could not start: {taken}") from error


def configured(
    build: Callable[[argparse.Namespace], SettingsT], args: argparse.Namespace
) -> SettingsT:
    """Settings built from flags; a bad combination is a ConfigurationError, not a traceback."""
    try:
        return build(args)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None


def _configure_logs(args: argparse.Namespace) -> None:
    """JSON (or text) log lines on stderr from --log-level up, secrets redacted."""
    from server import logs

    configured(lambda a: logs.configure(str(a.log_format), str(a.log_level)), args)


async def _serve(args: argparse.Namespace) -> int:
    from gateway import config as gateway_config
    from server import config as core_config
    from server.auth.settings import check_disabled_auth

    _configure_logs(args)
    core_settings = configured(core_config.from_arguments, args)
    # With auth off the gateway must stay local too: it would hand the core to anyone.
    configured(lambda a: check_disabled_auth(core_settings.auth, str(a.http_address)), args)
    gateway_settings = configured(gateway_config.from_arguments, args)
    # A taken HTTP address fails before the core starts. Started for nothing, the core
    # would be stopped while the gateway's gRPC connection to it was still closing, and
    # gRPC would print the GOAWAY that connection received beside the one error line.
    _check_address_free("gateway", gateway_settings.http_host, gateway_settings.http_port)
    # Entered core first, so the gateway stops first: no new HTTP stream reaches a
    # core that is draining.
    with StopSignals(own_process=is_own_command("serve")) as signals:
        async with _running_core(core_settings) as core:
            core_target = f"{local_host(core_settings.grpc_address)}:{core.grpc_port}"
            gateway_settings = replace(gateway_settings, core_target=core_target)
            async with _running_gateway(gateway_settings) as gateway:
                signals.arm()
                _print_endpoints(
                    grpc=core_target,
                    http=f"http://{local_host(gateway_settings.http_address)}:{gateway.port}/",
                    metrics=_metrics_url(core_settings.metrics_address, core.metrics_port),
                )
                await _print_local_key(core, core_settings)
                await signals.wait()
                out("scriptgen: stopping")
    return 0


async def _print_local_key(core: Core, settings: CoreConfig) -> None:
    """The one-command start's key: made on a fresh data dir, printed; later, where it is."""
    from server.auth.local_key import ensure_local_key

    if not settings.auth.enabled:
        out("API keys are OFF (SCRIPTGEN_AUTH=disabled): local use only")
        return
    key, path, created = await ensure_local_key(core.store, settings.data_dir)
    if created:
        out(f"Created a local API key (tenant 'default', saved in {path}, mode 0600):")
        out(f"  export SCRIPTGEN_API_KEY={key}")
    else:
        out(f"API key: in {path} (send it as 'Authorization: Bearer <key>')")


async def _server(args: argparse.Namespace) -> int:
    from server import config as core_config

    _configure_logs(args)
    settings = configured(core_config.from_arguments, args)
    with StopSignals(own_process=is_own_command("server")) as signals:
        async with _running_core(settings) as core:
            signals.arm()
            _print_endpoints(
                grpc=f"{local_host(settings.grpc_address)}:{core.grpc_port}",
                metrics=_metrics_url(settings.metrics_address, core.metrics_port),
            )
            await signals.wait()
            out("scriptgen: stopping")
    return 0


async def _gateway(args: argparse.Namespace) -> int:
    from gateway import config as gateway_config

    _check_worker_flags(args)  # before logging is set up: a bad flag changes nothing
    _configure_logs(args)
    settings = configured(gateway_config.from_arguments, args)
    settings = replace(
        settings,
        reuse_port=bool(args.reuse_port),
        worker_metrics_dir=args.worker_metrics_dir,
        worker_name=args.worker_name,
    )
    if args.workers != 1:
        return await _gateway_workers(args, settings)
    with StopSignals(own_process=is_own_command("gateway")) as signals:
        signals.arm()  # a gateway's start cannot hang: a signal meanwhile ends it cleanly
        async with _running_gateway(settings) as gateway:
            _print_endpoints(http=f"http://{local_host(settings.http_address)}:{gateway.port}/")
            await signals.wait()
            out("scriptgen: stopping")
    return 0


def _check_worker_flags(args: argparse.Namespace) -> None:
    """The flags --workers' supervisor gives each of its workers, checked."""
    from gateway.worker_metrics import WORKER_NAME

    if bool(args.worker_metrics_dir) != bool(args.worker_name):
        raise ConfigurationError("--worker-metrics-dir and --worker-name go together")
    if not args.worker_name:
        return
    if args.workers != 1:
        raise ConfigurationError("--worker-name is for one worker (--workers 1)")
    if not WORKER_NAME.fullmatch(args.worker_name):
        raise ConfigurationError(
            f"--worker-name must be letters, digits, '-' or '_', not {args.worker_name!r}"
        )
    if not os.path.isdir(args.worker_metrics_dir):
        raise ConfigurationError(
            f"--worker-metrics-dir {args.worker_metrics_dir!r} is not a folder"
        )


async def _gateway_workers(args: argparse.Namespace, settings: GatewayConfig) -> int:
    from scriptgen.cli._workers import GatewayWorkers, worker_stop_seconds

    try:
        workers = GatewayWorkers(
            getattr(args, "command_arguments", ()),
            settings.http_host,
            settings.http_port,
            int(args.workers),
            stop_seconds=worker_stop_seconds(settings),
        )
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    except OSError as error:
        raise StartupError(f"the gateway could not start: {error}") from error
    with StopSignals(own_process=is_own_command("gateway")) as signals:
        # Armed first: a stop signal while the workers start is answered once they have.
        signals.arm()
        try:
            await workers.start()
        except (OSError, RuntimeError, TimeoutError) as error:
            raise StartupError(f"the gateway workers could not start: {error}") from error
        host = local_host(settings.http_address)
        _print_endpoints(http=f"http://{host}:{workers.port}/")
        out(f"  workers  {args.workers} (pids {' '.join(map(str, workers.pids))})")
        stop = asyncio.ensure_future(signals.wait())
        died = asyncio.ensure_future(workers.wait_any())
        try:
            await asyncio.wait({stop, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            died.cancel()
            out("scriptgen: stopping")
            status = await workers.stop(asked=signals.requested)
    return status


def _metrics_url(address: str | None, port: int | None) -> str | None:
    if address is None or port is None:
        return None
    return f"http://{local_host(address)}:{port}/metrics"
