"""A real trial server on a loopback port, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import uvicorn

from randomizer.server.app import create_app
from randomizer.server.main import ServeOptions, open_state


@contextmanager
def live_server(
    db_url: str,
    key_file: Path,
    clock: Callable[[], datetime] | None = None,
    mail_config: Path | None = None,
) -> Iterator[str]:
    """Serve the trial at ``db_url`` on a free loopback port; yields the base URL.

    ``clock`` replaces the server's clock (tokens, throttling, audit times);
    ``mail_config`` makes the server send notification e-mails (serve --mail-config).
    """
    state = open_state(ServeOptions(db_url=db_url, key_file=key_file, mail_config=mail_config))
    if clock is not None:
        state.clock = clock
    app = create_app(state)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        state.store.dispose()
