"""One sync and one async websocket consumer, both in the 'broadcast' group,
and one per user for the README's notification job."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer, JsonWebsocketConsumer

from demo_app.middleware import where
from demo_app.models import Note


class JsonEcho(JsonWebsocketConsumer):
    groups = ["broadcast"]  # noqa: RUF012 - the attribute Channels reads

    def connect(self) -> None:
        self.accept()

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        if "save" in content:
            note = Note.objects.create(token=content["save"], text="ws", via="ws-json")
            self.send_json({"saved": note.token, "where": where()})
            return
        user = self.scope["user"].get_username() or "anonymous"
        self.send_json({"echo": content, "user": user, "where": where()})

    def broadcast_message(self, event: dict[str, Any]) -> None:
        self.send_json({"broadcast": event["text"]})


class AsyncEcho(AsyncWebsocketConsumer):
    groups = ["broadcast"]  # noqa: RUF012 - the attribute Channels reads

    async def connect(self) -> None:
        await self.accept()

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        if bytes_data is not None:
            await self.send(bytes_data=bytes_data[::-1])
            return
        assert text_data is not None
        if text_data.startswith("save:"):
            token = text_data.removeprefix("save:")
            await Note.objects.acreate(token=token, text="ws", via="ws-async")
            await self.send(text_data=f"saved:{token}")
            return
        user = self.scope["user"].get_username() or "anonymous"
        await self.send(text_data=f"echo:{text_data}:{user}:{where()}")

    async def broadcast_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=f"broadcast:{event['text']}")


class Notifications(AsyncWebsocketConsumer):
    """Joins its user's group, ``user-<id>``, and forwards each notification."""

    async def connect(self) -> None:
        self.group = f"user-{self.scope['url_route']['kwargs']['user_id']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def notify(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
