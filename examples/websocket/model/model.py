"""A websocket model as Truss has them: one socket, messages both ways, for as long as the caller keeps it."""

import json

from fastapi import WebSocket, WebSocketDisconnect


class Model:
    def __init__(self, **kwargs):
        self._said = 0

    async def websocket(self, websocket: WebSocket):
        # Truss has accepted the socket already; returning closes it (1000).
        try:
            while True:
                text = await websocket.receive_text()
                if text == "bye":
                    return
                self._said += 1
                await websocket.send_text(json.dumps({"echo": text, "words": len(text.split()), "said": self._said}))
        except WebSocketDisconnect:
            pass
