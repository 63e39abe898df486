"""A stand-in Telegram Bot API server on 127.0.0.1 for tests and benchmarks.

It speaks the parts of the Bot API Esoteric uses, the way python-telegram-bot 22 talks to it
(``POST /bot{token}/{method}`` with form-encoded parameters, JSON-encoded nested values), and
records every call. Like Telegram it enforces the limits that matter to a bot: text of 1-4096
characters after entity parsing, HTML that parses, ``callback_data`` of 1-64 bytes, no edit that
changes nothing, no ``getUpdates`` while a webhook is set. Faults (429 with ``retry_after``, 400,
403 blocked) can be injected per method and chat. Webhook mode posts updates to the URL given to
``setWebhook`` with its secret header, as Telegram does.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

PAYLOADS = Path(__file__).resolve().parents[2].parent / "shared" / "payloads" / "telegram"
TOKEN = "7012345678:AAFakeTokenForLocalTestsOnly_abcdefgh"
MAX_TEXT = 4096
_ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "span",
    "blockquote",
    "tg-emoji",
}


def payload(name: str) -> dict[str, Any]:
    """One of the shared Telegram sample payloads, as a dict."""
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text(encoding="utf-8"))
    return data


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _EntityParser(HTMLParser):
    """Telegram's HTML parse mode, strictly enough to reject what Telegram rejects."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED_TAGS:
            self.error = self.error or f'Unsupported start tag "{tag}"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.error = self.error or f'Unmatched end tag "{tag}"'
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.error = self.error or "Unexpected character"
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.error = self.error or f'Unsupported entity "&{name};"'
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.text.append(html.unescape(f"&#{name};"))


def parse_html(text: str) -> tuple[str, str | None]:
    """The visible text of an HTML-formatted message, and Telegram's complaint if any."""
    # A bare "&" that starts no entity is an error on Telegram; HTMLParser would pass it as data.
    for index, char in enumerate(text):
        if char == "&":
            end = text.find(";", index)
            if end == -1 or not text[index + 1 : end].replace("#", "").isalnum():
                return text, f"Can't find end of the entity starting at byte offset {index}"
    parser = _EntityParser()
    parser.feed(text)
    parser.close()
    if parser.rawdata:
        parser.error = parser.error or "Unexpected end of message"
    if parser.stack and not parser.error:
        parser.error = f'Can\'t find end tag corresponding to start tag "{parser.stack[-1]}"'
    return "".join(parser.text), parser.error


@dataclass(frozen=True)
class ApiCall:
    """One request the bot made, as the server saw it."""

    token: str
    method: str
    params: dict[str, Any]
    status: int
    at: float

    @property
    def chat_id(self) -> str | None:
        value = self.params.get("chat_id")
        return None if value is None else str(value)

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))


@dataclass
class Fault:
    method: str
    status: int
    body: dict[str, Any]
    times: int
    chat_id: str | None = None
    when: Callable[[dict[str, Any]], bool] | None = None

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if self.times <= 0 or method != self.method:
            return False
        if self.chat_id is not None and str(params.get("chat_id")) != self.chat_id:
            return False
        return self.when is None or self.when(params)


@dataclass
class _Pending:
    update: dict[str, Any]
    delivered: bool = False

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])


@dataclass
class StandInBot:
    token: str
    me: dict[str, Any]
    pending: list[_Pending] = field(default_factory=list)
    webhook: dict[str, Any] | None = None
    messages: dict[tuple[str, int], str] = field(default_factory=dict)
    message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    # Files users sent, by file_id: (file_path, bytes). Served by getFile and the file route.
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    @property
    def id(self) -> int:
        return int(self.me["id"])


def _decode(value: str) -> Any:
    # PTB JSON-encodes nested values (reply_markup, allowed_updates, reply_parameters).
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _error(status: int, description: str, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


class TelegramServer:
    """Run with ``async with TelegramServer() as server``; point PTB at ``server.base_url``."""

    def __init__(self, token: str = TOKEN, me: dict[str, Any] | None = None) -> None:
        self.bots: dict[str, StandInBot] = {}
        self.calls: list[ApiCall] = []
        self.faults: list[Fault] = []
        self.webhook_statuses: list[int] = []
        # Paths of files the bot downloaded (the file route).
        self.downloads: list[str] = []
        # Documents the bot sent: (chat id, filename, bytes).
        self.documents: list[tuple[str, str, bytes]] = []
        self.port = 0
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._update_ids = itertools.count(900_000_000)
        # Called with each recorded call, for drivers that track replies as they come.
        self.on_call: Callable[[ApiCall], None] | None = None
        self.add_bot(token, me or payload("resp_getMe.json")["result"])

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._client = aiohttp.ClientSession()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)

    def add_file(self, file_id: str, data: bytes, file_path: str, token: str | None = None) -> None:
        """A file a user sent, as Telegram keeps it: ``getFile`` gives its path, and
        ``/file/bot<token>/<path>`` its bytes."""
        bot = self.bots[token] if token else self.bot
        bot.files[file_id] = (file_path, data)

    async def _download(self, request: web.Request) -> web.Response:
        bot = self.bots.get(request.match_info["token"])
        path = request.match_info["path"]
        self.downloads.append(path)
        if bot is None:
            return web.json_response(_error(401, "Unauthorized"), status=401)
        for stored_path, data in bot.files.values():
            if stored_path == path:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.json_response(_error(404, "Not Found"), status=404)

    async def close(self) -> None:
        self._closing.set()
        async with self._changed:
            self._changed.notify_all()
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> TelegramServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """The value for python-telegram-bot's ``base_url`` (and ESOTERIC_TELEGRAM_API_URL)."""
        return f"http://127.0.0.1:{self.port}/bot"

    def add_bot(self, token: str, me: dict[str, Any]) -> StandInBot:
        bot = StandInBot(token, me)
        self.bots[token] = bot
        return bot

    @property
    def bot(self) -> StandInBot:
        return next(iter(self.bots.values()))

    # -- driving the bot -------------------------------------------------------------------------

    def next_update_id(self) -> int:
        return next(self._update_ids)

    async def push(self, update: dict[str, Any], token: str | None = None) -> int | None:
        """Deliver an update the way Telegram would: queued for ``getUpdates``, or posted to
        the webhook when one is set. Returns the webhook's HTTP status in webhook mode."""
        bot = self.bots[token] if token else self.bot
        if bot.webhook is None:
            bot.pending.append(_Pending(update))
            async with self._changed:
                self._changed.notify_all()
            return None
        assert self._client is not None
        headers = {"Content-Type": "application/json"}
        if bot.webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = str(bot.webhook["secret_token"])
        async with self._client.post(
            str(bot.webhook["url"]), data=json.dumps(update), headers=headers
        ) as response:
            await response.read()
            self.webhook_statuses.append(response.status)
            return response.status

    def fail(
        self,
        method: str,
        status: int,
        description: str | None = None,
        *,
        times: int = 1,
        chat_id: int | str | None = None,
        retry_after: int | None = None,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching calls with an error instead of doing them."""
        default = {
            429: f"Too Many Requests: retry after {retry_after}",
            403: "Forbidden: bot was blocked by the user",
            400: "Bad Request: can't parse entities: Unsupported start tag at byte offset 0",
        }
        params = {"retry_after": retry_after} if retry_after is not None else {}
        fault = Fault(
            method,
            status,
            _error(status, description or default.get(status, "Error"), **params),
            times,
            None if chat_id is None else str(chat_id),
            when,
        )
        self.faults.append(fault)
        return fault

    # -- reading what happened -----------------------------------------------------------------

    def calls_to(
        self, method: str, chat_id: int | str | None = None, *, ok: bool | None = True
    ) -> list[ApiCall]:
        return [
            c
            for c in self.calls
            if c.method == method
            and (chat_id is None or c.chat_id == str(chat_id))
            and (ok is None or (c.status == 200) == ok)
        ]

    def texts(self, chat_id: int | str) -> list[str]:
        """The text of every message delivered to a chat, in order."""
        return [c.text for c in self.calls_to("sendMessage", chat_id)]

    def visible(self, chat_id: int | str) -> list[str]:
        """What the chat shows now: each message's current visible text, oldest first."""
        bot = self.bot
        keys = sorted(k for k in bot.messages if k[0] == str(chat_id))
        return [bot.messages[k] for k in keys]

    async def wait_for(
        self, predicate: Callable[[TelegramServer], bool], within: float = 15.0
    ) -> None:
        """Wait until ``predicate(self)`` holds; fail with a clear message if it never does."""

        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        try:
            await asyncio.wait_for(until(), within)
        except TimeoutError:
            raise AssertionError(
                f"the bot did not do what was expected; calls: "
                f"{[(c.method, c.chat_id, c.status, c.text[:60]) for c in self.calls[-20:]]}"
            ) from None

    async def wait_messages(self, chat_id: int | str, count: int, within: float = 15.0) -> None:
        await self.wait_for(lambda s: len(s.calls_to("sendMessage", chat_id)) >= count, within)

    # -- the API -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params: dict[str, Any] = {}
        if request.content_type == "application/json":
            raw = await request.read()
            params = json.loads(raw) if raw else {}
        else:
            form = await request.post()
            params = {k: _decode(v) for k, v in form.items() if isinstance(v, str)}
            # Files a bot uploads (sendDocument's multipart): kept whole, by field name.
            uploads = {k: v for k, v in form.items() if isinstance(v, web.FileField)}
            for name, upload in uploads.items():
                params[name] = {"filename": upload.filename, "data": upload.file.read()}
        bot = self.bots.get(token)
        if bot is None:
            status, body = 401, _error(401, "Unauthorized")
        else:
            status, body = await self._dispatch(bot, method, params)
        call = ApiCall(token, method, params, status, time.perf_counter())
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(body, status=status)

    async def _dispatch(
        self, bot: StandInBot, method: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        for fault in self.faults:
            if fault.matches(method, params):
                fault.times -= 1
                return fault.status, fault.body
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return 404, _error(404, "Not Found")
        result: tuple[int, dict[str, Any]] = await handler(bot, params)
        return result

    @staticmethod
    def _ok(result: Any) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": result}

    async def _api_sendDocument(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        document = params.get("document")
        if not isinstance(document, dict) or not document.get("data"):
            return 400, _error(400, "Bad Request: there is no document in the request")
        message_id = next(bot.message_ids)
        chat_id = params.get("chat_id")
        self.documents.append((str(chat_id), str(document["filename"]), bytes(document["data"])))
        return self._ok(
            {
                "message_id": message_id,
                "date": 1767225600,
                "chat": {"id": int(str(chat_id)), "type": "private"},
                "document": {
                    "file_id": f"doc-{message_id}",
                    "file_unique_id": f"udoc-{message_id}",
                    "file_name": document["filename"],
                    "mime_type": "application/pdf",
                    "file_size": len(document["data"]),
                },
            }
        )

    async def _api_getFile(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id", ""))
        if file_id not in bot.files:
            return 400, _error(400, "Bad Request: invalid file_id")
        path, data = bot.files[file_id]
        if len(data) > 20 * 1024 * 1024:
            return 400, _error(400, "Bad Request: file is too big")
        return self._ok(
            {
                "file_id": file_id,
                "file_unique_id": f"u-{file_id}",
                "file_size": len(data),
                "file_path": path,
            }
        )

    async def _api_getMe(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        return self._ok(bot.me)

    async def _api_setWebhook(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        url = str(params.get("url", ""))
        if not url:
            bot.webhook = None
            return self._ok(True)
        if not url.startswith(("http://", "https://")):
            return 400, _error(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        bot.webhook = dict(params)
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    async def _api_deleteWebhook(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        bot.webhook = None
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            bot.pending.clear()
        return 200, {"ok": True, "result": True, "description": "Webhook was deleted"}

    async def _api_getUpdates(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        if bot.webhook is not None:
            return 409, _error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        # Updates returned before and now confirmed by the offset are gone for good.
        bot.pending = [p for p in bot.pending if not (p.delivered and p.update_id < offset)]
        if not bot.pending and timeout > 0:

            async def arrived() -> None:
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: bool(bot.pending) or self._closing.is_set()
                    )

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived(), timeout)
        batch = bot.pending[:limit]
        for item in batch:
            item.delivered = True
        return self._ok([p.update for p in batch])

    def _check_text(self, params: dict[str, Any]) -> tuple[str, tuple[int, dict[str, Any]] | None]:
        text = str(params.get("text", ""))
        if params.get("parse_mode") == "HTML":
            text, problem = parse_html(text)
            if problem:
                return text, (400, _error(400, f"Bad Request: can't parse entities: {problem}"))
        if not text.strip():
            return text, (400, _error(400, "Bad Request: message text is empty"))
        if utf16_len(text) > MAX_TEXT:
            return text, (400, _error(400, "Bad Request: message is too long"))
        markup = params.get("reply_markup")
        if isinstance(markup, dict):
            for row in markup.get("inline_keyboard", []):
                for button in row:
                    data = button.get("callback_data")
                    if data is not None and not 1 <= len(str(data).encode()) <= 64:
                        return text, (400, _error(400, "Bad Request: BUTTON_DATA_INVALID"))
        return text, None

    def _message(self, bot: StandInBot, chat_id: str, message_id: int, text: str) -> Any:
        chat: dict[str, Any] = {"id": int(chat_id)}
        if int(chat_id) > 0:
            chat.update(type="private", first_name="Customer")
        else:
            chat.update(type="supergroup", title="Group")
        bot_user = {k: bot.me[k] for k in ("id", "is_bot", "first_name", "username")}
        return {
            "message_id": message_id,
            "from": bot_user,
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }

    async def _api_sendMessage(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        chat_id = str(params.get("chat_id", ""))
        if not chat_id:
            return 400, _error(400, "Bad Request: chat_id is empty")
        text, problem = self._check_text(params)
        if problem:
            return problem
        message_id = next(bot.message_ids)
        bot.messages[(chat_id, message_id)] = text
        return self._ok(self._message(bot, chat_id, message_id, text))

    async def _api_editMessageText(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        chat_id = str(params.get("chat_id", ""))
        message_id = int(params.get("message_id") or 0)
        if (chat_id, message_id) not in bot.messages:
            return 400, _error(400, "Bad Request: message to edit not found")
        text, problem = self._check_text(params)
        if problem:
            return problem
        if bot.messages[(chat_id, message_id)] == text and "reply_markup" not in params:
            return 400, payload("err_400_not_modified.json")
        bot.messages[(chat_id, message_id)] = text
        return self._ok(self._message(bot, chat_id, message_id, text))

    async def _api_deleteMessage(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        key = (str(params.get("chat_id", "")), int(params.get("message_id") or 0))
        if bot.messages.pop(key, None) is None:
            return 400, _error(400, "Bad Request: message to delete not found")
        return self._ok(True)

    async def _api_sendChatAction(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        return self._ok(True)

    async def _api_answerCallbackQuery(self, bot: StandInBot, params: dict[str, Any]) -> Any:
        if not params.get("callback_query_id"):
            return 400, _error(400, "Bad Request: query is too old and response timeout expired")
        return self._ok(True)


# -- update builders, in the shape of the shared samples ------------------------------------------


def user(user_id: int, first_name: str = "Asha", username: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username:
        data["username"] = username
    return data


def chat_of(chat_id: int) -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Asha"}
    return {"id": chat_id, "type": "supergroup", "title": "Loan Desk"}


def message_update(
    update_id: int,
    chat_id: int,
    text: str | None = None,
    *,
    from_id: int | None = None,
    message_id: int | None = None,
    kind: str = "message",
    **fields: Any,
) -> dict[str, Any]:
    """A ``message`` (or ``edited_message``) update; ``fields`` adds entities, contact, photo."""
    message: dict[str, Any] = {
        "message_id": message_id or update_id % 1_000_000,
        "from": user(from_id or chat_id),
        "chat": chat_of(chat_id),
        "date": 1767225600,
    }
    if text is not None:
        message["text"] = text
        if text.startswith("/"):
            length = len(text.split()[0])
            message["entities"] = [{"offset": 0, "length": length, "type": "bot_command"}]
    message.update(fields)
    if kind == "edited_message":
        message["edit_date"] = 1767225660
    return {"update_id": update_id, kind: message}


def callback_update(
    update_id: int, chat_id: int, data: str, *, message_id: int = 1, query_id: str | None = None
) -> dict[str, Any]:
    sample = payload("update_callback_query.json")["callback_query"]
    query = dict(sample)
    query["id"] = query_id or f"cq{update_id}"
    query["from"] = user(chat_id)
    query["data"] = data
    query["message"] = dict(sample["message"], message_id=message_id, chat=chat_of(chat_id))
    return {"update_id": update_id, "callback_query": query}


def contact_update(update_id: int, chat_id: int, phone: str) -> dict[str, Any]:
    contact = {"phone_number": phone, "first_name": "Asha", "user_id": chat_id}
    return message_update(update_id, chat_id, contact=contact)
