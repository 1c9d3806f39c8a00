"""The live page, served with aiohttp: ``/`` (the page), ``/api/status`` (JSON),
``/api/events`` (server-sent events: the status whenever it changes, and log lines) and
``/stacks/<stack>/{stack.jpg,stack.fits,frames.tsv}``. Nothing else is served: any other path,
a stack that does not exist or a file outside that list is a 404, so the server shows only its
own outputs whatever the URL holds. It binds 127.0.0.1 unless ``--host`` says otherwise.

The session runs in a worker thread; the server never touches its state, it serves the JSON
snapshot the worker replaces after every change (:meth:`Session._changed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from pathlib import Path

from aiohttp import web

log = logging.getLogger("astroflow.live")
PAGE = Path(__file__).with_name("static") / "index.html"
OUTPUTS = {
    "stack.jpg": "image/jpeg",
    "stack.fits": "application/fits",
    "frames.tsv": "text/tab-separated-values",
}
KEEPALIVE_SECONDS = 15.0
CLIENTS = web.AppKey("clients", set)
SESSION = web.AppKey("session", object)


async def _page(request: web.Request) -> web.Response:
    return web.FileResponse(PAGE, headers={"Cache-Control": "no-cache"})


async def _status(request: web.Request) -> web.Response:
    return web.Response(text=request.app[SESSION].snapshot, content_type="application/json")


async def _output(request: web.Request) -> web.StreamResponse:
    session, name, file = request.app[SESSION], request.match_info["stack"], request.match_info["file"]
    if name not in session.stacks or file not in OUTPUTS:
        raise web.HTTPNotFound()
    path = session.stacks[name].dir / file
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": OUTPUTS[file], "Cache-Control": "no-cache"})


async def _events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue: asyncio.Queue = asyncio.Queue(maxsize=256)
    clients = request.app[CLIENTS]
    clients.add(queue)
    try:
        await response.write(f"event: status\ndata: {request.app[SESSION].snapshot}\n\n".encode())
        while True:
            try:
                kind, data = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(f"event: {kind}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        clients.discard(queue)
    return response


def make_app(session) -> web.Application:
    app = web.Application()
    app[SESSION] = session
    app[CLIENTS] = set()
    app.router.add_get("/", _page)
    app.router.add_get("/api/status", _status)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/stacks/{stack}/{file}", _output)
    return app


def _broadcast(app: web.Application, kind: str, data) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    for queue in list(app[CLIENTS]):
        if kind == "status":  # only the latest status matters: drop older ones still queued
            kept = [item for item in _drain(queue) if item[0] != "status"]
            for item in kept:
                queue.put_nowait(item)
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait((kind, text))


def _drain(queue: asyncio.Queue) -> list:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def serve(session, host: str = "127.0.0.1", port: int = 8080) -> int:
    """Serve the page and run the session until SIGINT/SIGTERM; returns the exit status."""

    async def main() -> int:
        app = make_app(session)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            log.error("cannot serve on %s:%d: %s", host, port, exc)
            await runner.cleanup()
            return 2
        loop = asyncio.get_running_loop()
        session.notify = lambda kind, data: loop.call_soon_threadsafe(_broadcast, app, kind, data)
        stop, done = threading.Event(), asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        worker = threading.Thread(target=session.run, args=(stop,), name="astroflow-live", daemon=True)
        worker.start()
        print(f"astroflow live: http://{host}:{port}/ (watching {session.watch})", flush=True)
        await done.wait()
        stop.set()
        await asyncio.to_thread(worker.join)
        await runner.cleanup()
        return 0

    return asyncio.run(main())
