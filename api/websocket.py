"""WebSocket plumbing shared by the feeds: refusing a handshake, pumping messages to a client."""
from __future__ import annotations

import asyncio

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

__all__ = ["deny", "pump"]


async def deny(websocket: WebSocket, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Refuse a WebSocket handshake with an HTTP status and a JSON reason (close 1008 if unsupported)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": detail}, status_code=status, headers=headers))
    else:
        await websocket.close(code=1008, reason=detail[:120])


async def pump(websocket: WebSocket, next_message) -> None:
    """Send ``await next_message()`` (text or bytes) until the client leaves or the server stops.

    A second task watches the client's side, so a departure is noticed even while no
    message is due (otherwise a quiet feed would hold the connection open at shutdown).
    """
    async def client_left() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    watcher = asyncio.create_task(client_left())
    try:
        while True:
            getter = asyncio.ensure_future(next_message())
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return
            message = getter.result()
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(message)
    except (WebSocketDisconnect, RuntimeError, StopAsyncIteration):
        return
    finally:
        watcher.cancel()
