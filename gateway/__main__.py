"""`python -m gateway`: run the gateway alone until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from gateway.config import add_arguments, from_arguments
from gateway.server import GatewayServer


async def _serve(server: GatewayServer) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await server.start()
    logging.getLogger("gateway").info("gateway listening on port %d", server.port)
    await stopping.wait()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    add_arguments(parser)
    config = from_arguments(parser.parse_args())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(GatewayServer(config)))


if __name__ == "__main__":
    main()
