"""The dashboards' WSGI server: waitress, in the foreground (``releve dashboard``) or in a thread.

Waitress rather than gunicorn: it is pure Python (nothing to compile, runs wherever Relevé does),
serves from one process with a pool of threads — so the fleet snapshot that the control room
shares, its background refresh and the login throttle's counts live once, in one place — and it
buffers whole requests and responses itself, so a slow client holds no worker thread. The Werkzeug
development server is never used, not even by the tests, the demo or the screenshots.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from waitress.server import create_server

log = logging.getLogger(__name__)


def make_server(wsgi_app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> Any:
    """A waitress server bound to ``host:port`` (0: a free port), not yet serving."""
    return create_server(
        wsgi_app,
        host=host,
        port=port,
        threads=threads,
        ident="",
        channel_timeout=120,
        max_request_body_size=1 << 20,
        clear_untrusted_proxy_headers=True,
    )


def serve(wsgi_app: Any, host: str, port: int, threads: int = 8) -> None:
    """Serve until Ctrl-C (``KeyboardInterrupt``, as before) or SIGTERM (a service manager's stop: returns).

    SIGTERM is handled here rather than left to its default (the process killed mid-response): the
    server closes its connections and stops its threads as on Ctrl-C. It also stops a server started
    in the background of a script, where the shell has set SIGINT to be ignored.
    """
    server = make_server(wsgi_app, host, port, threads)
    terminated = threading.Event()

    def on_sigterm(signum: int, frame: Any) -> None:
        terminated.set()
        raise KeyboardInterrupt  # waitress's loop lets it through (its handlers catch Exception only)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main else None
    try:
        server.run()
    except KeyboardInterrupt:
        if not terminated.is_set():
            raise  # Ctrl-C: the command line says "interrupted"
        log.info("dashboards: stopping on SIGTERM")
    finally:
        _shutdown(server)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _shutdown(server: Any) -> None:
    """Close the listening socket and every open connection, then stop the worker threads."""
    while server._map:
        for channel in list(server._map.values()):
            channel.close()  # the listener, open connections, and the loop's own wake-up trigger
    server.task_dispatcher.shutdown()


@contextmanager
def serve_in_thread(wsgi_app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> Iterator[str]:
    """Serve from a background thread; yield the base URL (``http://host:port``)."""
    server = make_server(wsgi_app, host, port, threads)
    thread = threading.Thread(target=server.run, daemon=True, name="dashboards-http")
    thread.start()
    try:
        yield f"http://{host}:{server.effective_port}"
    finally:
        server.trigger.pull_trigger(lambda: _shutdown(server))
        thread.join(timeout=10)
        if thread.is_alive():  # the trigger did not run: close from here
            _shutdown(server)
