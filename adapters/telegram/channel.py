"""The Telegram channel: python-telegram-bot 22 with an explicit lifecycle, long polling or a
webhook on the project's ASGI app, and the core's outbound and streaming ports."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from telegram import (
    Bot,
    ChatMemberUpdated,
    InputFile,
    ReplyKeyboardRemove,
    Update,
)
from telegram.constants import ChatAction, ChatMemberStatus, ParseMode
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler

from adapters.telegram.bot import TolerantBot
from adapters.telegram.delivery import (
    BotApiCaller,
    ChatBlocked,
    FloodLimited,
    RetryPolicy,
)
from adapters.telegram.normalise import CHANNEL, BotIdentity, is_group, normalise
from adapters.telegram.render import (
    CallbackCodec,
    Chunk,
    contact_keyboard,
    inline_keyboard,
    render_chunks,
    render_text,
    reply_text,
    split_text,
)
from adapters.telegram.transport import AiohttpRequest
from core.conversation import ConversationService
from core.errors import ChannelError, ConfigError, EsotericError, StoreUnavailable
from core.messages import QuoteDocument, Reply, Target
from core.ports import ReplyStream
from core.ratelimit import SharedStateUnavailable
from core.sendbudget import LocalSendBudget, SendBudget
from core.store.leader import LeaderLock
from core.voice import SUPPORTED_FORMATS, AudioClip, VoiceError, audio_format

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ("message", "edited_message", "callback_query", "my_chat_member")
DEFAULT_API_URL = "https://api.telegram.org/bot"

APOLOGY = "Sorry, something went wrong on my side. Please send that again in a moment."
BUSY = "Sorry, I'm having trouble right now. Please try again in a minute."
STALE_BUTTON = "That button has expired. Please type your answer instead."
# Sent as JSON by PTB as its own objects would be; a dict skips building the object per call.
NO_LINK_PREVIEW = {"is_disabled": True}


@dataclass(frozen=True)
class TelegramConfig:
    token: str = field(repr=False)  # secrets stay out of reprs (and so out of logs)
    api_url: str | None = None  # python-telegram-bot's base_url, e.g. http://host:port/bot
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    # HTTP connections to the Bot API (turns in flight share them).
    connections: int = 16
    # Telegram allows about 30 messages a second per bot; None disables the pace (benchmarks).
    messages_per_second: float | None = 30.0
    # Streaming edits: Telegram allows about one message a second per chat, 20 a minute in groups.
    edit_interval: float = 1.0
    # The send budget counts as saturated once the demand on it reaches this many seconds of
    # sends (the sends booked ahead, plus one for each reply streaming here: each needs at least
    # one more), or once it has been in use without a gap this long (the sends of the last
    # second reached the budget). Streamed replies then send once, complete, and make no edits
    # (replies, not edits, get the budget; an edit costs a call as a message does).
    saturated_after: float = 1.0
    # A streamed reply's first message waits this long after the stream starts for the rest:
    # a reply written by then (a fast model's) goes out whole in one call, with no edits; a
    # slower one shows its first words then, still well within a reader's patience.
    first_send_hold: float = 0.3
    group_edit_interval: float = 3.0
    # A turn answered within the grace period needs no typing indicator; a longer one shows it,
    # refreshed before Telegram's five-second display runs out.
    typing_grace: float = 0.3
    typing_refresh: float = 4.5
    typing_max: float = 60.0
    poll_timeout: int = 10
    # The next long poll (which confirms the last batch to Telegram) waits until that batch is
    # stored. Past this long the poll fails and is tried again (PTB backs off): an update that
    # could not be stored is never confirmed, so Telegram keeps it.
    store_wait: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    stop_timeout: float = 30.0
    # False: send only (a turn worker), no polling and no webhook.
    receive: bool = True

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise ConfigError("TELEGRAM_BOT_TOKEN", "is empty")
        if self.webhook_url and not self.webhook_secret:
            raise ConfigError(
                "ESOTERIC_TELEGRAM_WEBHOOK_SECRET", "must be set with ESOTERIC_TELEGRAM_WEBHOOK_URL"
            )

    @property
    def mode(self) -> str:
        if not self.receive:
            return "sending only"
        return "webhook" if self.webhook_url else "polling"


def _file_url(api_url: str) -> str:
    return api_url[: -len("/bot")] + "/file/bot" if api_url.endswith("/bot") else api_url


def _is_parse_error(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return "parse entities" in text or "can't find end" in text or "unsupported start tag" in text


def _not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


class TelegramChannel:
    """Receives Telegram updates, hands them to the core, and delivers the core's replies."""

    name = CHANNEL
    # The Bot API lets bots download files of up to 20 MB (getFile).
    max_audio_bytes = 20 * 1024 * 1024

    def __init__(
        self,
        service: ConversationService,
        config: TelegramConfig,
        *,
        leader: LeaderLock | None = None,
        budget: SendBudget | None = None,
        documents: Callable[[QuoteDocument], tuple[str, bytes]] | None = None,
    ) -> None:
        self.service = service
        self.config = config
        # Renders a reply's quote as (filename, PDF bytes): ``core.quote.quote_pdf``.
        self.documents = documents
        # Long polling with several processes: only the leader polls.
        self.leader = leader
        self.codec = CallbackCodec()
        # Telegram's limits are per bot: with several processes, the budget is shared (Redis).
        self.budget = budget or LocalSendBudget(config.messages_per_second)
        self.caller = BotApiCaller(self.budget, config.retry)
        self.identity: BotIdentity | None = None
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._accepting = False
        # A chat's typing indicator: a timer during the grace period, then the task showing it.
        self._typing: dict[tuple[str, str], asyncio.TimerHandle | asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._streaming = 0  # replies streaming now, each owed at least one more call
        # Long polling: update ids fetched and not yet stored (or ignored).
        self._unsettled: set[int] = set()
        self._settled = asyncio.Event()
        self._settled.set()

    # -- documents -------------------------------------------------------------------------------

    async def _send_document(self, target: Target, document: QuoteDocument) -> None:
        """A reply's quote as a PDF, with ``sendDocument`` after its text. Rendered off the
        event loop (a long schedule takes tens of milliseconds)."""
        if self.documents is None:
            log.warning("no document renderer; quote %s not sent as a file", document.reference)
            return
        filename, data = await asyncio.to_thread(self.documents, document)
        bot = self._api
        chat, group = target.chat_key, is_group(target.chat_key)
        try:
            await self.caller.call(
                "sendDocument",
                lambda: bot.send_document(
                    chat_id=int(chat),
                    document=InputFile(data, filename=filename),
                    message_thread_id=self._thread(target),
                ),
                chat=chat,
                group=group,
            )
        except BadRequest as exc:
            raise ChannelError(f"sendDocument: {exc.message}") from exc

    # -- voice notes -----------------------------------------------------------------------------

    async def fetch_audio(self, ref: dict[str, Any]) -> AudioClip:
        """A voice note's audio through ``getFile`` and the file download, named with an
        extension the transcription API accepts (Telegram stores voice notes as ``.oga``)."""
        file_id = ref.get("file_id")
        if not file_id:
            raise VoiceError("unavailable", "the voice note has no file id")
        try:
            found = await self.bot.get_file(str(file_id))
            data = bytes(await found.download_as_bytearray())
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                raise VoiceError("too_large", f"Telegram: {exc.message}") from exc
            raise VoiceError("unavailable", f"Telegram: {exc.message}") from exc
        except TelegramError as exc:
            raise VoiceError("failed", f"Telegram: {exc}") from exc
        kind = audio_format(ref.get("mime"), ref.get("name")) or "ogg"
        if kind not in SUPPORTED_FORMATS:
            kind = "ogg"
        name = str(ref.get("name") or f"{ref.get('kind') or 'voice'}.{kind}")
        if audio_format(None, name) not in SUPPORTED_FORMATS:
            name = f"{name.rsplit('.', 1)[0]}.{kind}"
        return AudioClip(data, name, ref.get("mime"))

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def bot(self) -> Bot:
        if self._app is None:
            raise ChannelError("the Telegram channel is not started")
        return self._app.bot

    @property
    def _api(self) -> TolerantBot:
        bot = self.bot
        assert isinstance(bot, TolerantBot)
        return bot

    async def start(self) -> None:
        api_url = self.config.api_url or DEFAULT_API_URL
        bot = TolerantBot(
            self.config.token,
            base_url=api_url,
            base_file_url=_file_url(api_url),
            request=AiohttpRequest(connection_pool_size=self.config.connections),
            # PTB adds the long-poll timeout to this request's read timeout itself.
            get_updates_request=AiohttpRequest(connection_pool_size=1),
        )
        builder = ApplicationBuilder().bot(bot)
        if self.config.webhook_url:
            builder = builder.updater(None)
        app = builder.build()
        app.add_handler(TypeHandler(Update, self._on_update))
        app.add_error_handler(self._on_error)
        try:
            await app.initialize()
        except TelegramError as exc:
            await app.bot.shutdown()  # the HTTP clients opened before getMe failed
            if isinstance(exc, InvalidToken):
                raise ConfigError("TELEGRAM_BOT_TOKEN", "Telegram rejected the bot token") from exc
            raise ChannelError(f"could not reach the Telegram Bot API: {exc.message}") from exc
        self._app = app
        me = app.bot.bot
        self.identity = BotIdentity(me.id, me.username or "")
        await app.start()
        self._accepting = True
        try:
            if not self.config.receive:
                pass  # a turn worker only sends (esoteric worker)
            elif self.config.webhook_url:
                await self.caller.call(
                    "setWebhook",
                    lambda: app.bot.set_webhook(
                        url=str(self.config.webhook_url),
                        secret_token=self.config.webhook_secret,
                        allowed_updates=list(ALLOWED_UPDATES),
                    ),
                    paced=False,
                )
            elif self.leader is None:
                await self._start_polling()
            else:
                # Several processes: one polls, the others stand by to take over.
                self.leader.start(self._start_polling, self._stop_polling)
        except BaseException:
            self._accepting = False
            await app.stop()
            await app.shutdown()
            self._app = None
            raise
        log.info("Telegram channel started as @%s (%s)", self.identity.username, self.config.mode)

    async def _start_polling(self) -> None:
        app = self._app
        assert app is not None and app.updater is not None
        bot = app.bot
        assert isinstance(bot, TolerantBot)
        bot.hold_polls(self._before_poll, self._after_poll)
        await app.updater.start_polling(
            timeout=self.config.poll_timeout, allowed_updates=list(ALLOWED_UPDATES)
        )

    async def _stop_polling(self) -> None:
        app = self._app
        if app is not None and app.updater is not None and app.updater.running:
            await app.updater.stop()

    async def stop(self) -> None:
        app = self._app
        if app is None:
            return
        self._accepting = False
        if self.leader is not None:
            await self.leader.stop()
        await self._stop_polling()
        if app.running:
            await app.stop()  # stores the updates already fetched
        typing = list(self._typing.values())
        self._typing.clear()
        for handle in [*typing, *self._background]:
            handle.cancel()
        tasks = [t for t in typing if isinstance(t, asyncio.Task)]
        await asyncio.gather(*tasks, *self._background, return_exceptions=True)
        await app.shutdown()
        self._app = None

    async def check(self) -> tuple[bool, str]:
        app = self._app
        if app is None or not app.running:
            return False, "not started"
        if self.config.webhook_url or not self.config.receive:
            return True, self.config.mode
        if self.leader is not None and not self.leader.leading:
            return True, "standing by (another process polls)"
        if app.updater is None or not app.updater.running:
            return False, "polling stopped"
        return True, "polling"

    # -- webhook -------------------------------------------------------------------------------

    def router(self) -> APIRouter | None:
        if not self.config.webhook_url or not self.config.receive:
            return None
        router = APIRouter()

        @router.post(WEBHOOK_PATH, include_in_schema=False)
        async def telegram_webhook(request: Request) -> Response:
            status, detail = await self.receive_webhook(
                request.headers.get(SECRET_HEADER), await request.body()
            )
            return JSONResponse({"ok": status == 200, "detail": detail}, status_code=status)

        return router

    async def receive_webhook(self, secret: str | None, body: bytes) -> tuple[int, str]:
        """Check and queue one webhook delivery. 403 without the right secret, 400 for a body
        that is not an update, 503 while not running (Telegram delivers again later)."""
        expected = (self.config.webhook_secret or "").encode()
        if not expected or not hmac.compare_digest((secret or "").encode(), expected):
            return 403, "wrong or missing secret token"
        app = self._app
        if app is None or not self._accepting:
            return 503, "not running"
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not a Telegram update")
            update = Update.de_json(data, app.bot)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return 400, f"malformed update: {exc}"
        # Stored before Telegram hears 200: a 200 ends Telegram's redeliveries, so a crash after
        # it must find the message in SQL (and answer it at the next start).
        try:
            await self._receive(update)
        except EsotericError as exc:
            log.warning("webhook update %s not stored: %s", update.update_id, exc)
            return 503, "not stored; deliver again later"
        return 200, "stored"

    # -- long polling ----------------------------------------------------------------------------

    def _after_poll(self, updates: Sequence[Update]) -> None:
        if updates:
            self._unsettled.update(u.update_id for u in updates)
            self._settled.clear()

    async def _before_poll(self) -> None:
        """Hold the poll that would confirm the last batch until the batch is stored. If it is
        not stored in time, the poll fails (and PTB tries it again later): Telegram keeps what
        it has not been told is received."""
        if self._settled.is_set():
            return
        if not self._accepting:
            # Stopping: PTB's last poll would confirm what was fetched; not what is unstored.
            raise NetworkError("stopping with updates not stored; not confirming them")
        try:
            async with asyncio.timeout(self.config.store_wait):
                await self._settled.wait()
                # Stored without waiting for the disk, each: one sync for the whole batch.
                await self.service.sync_inbound()
        except StoreUnavailable as exc:
            log.warning("Telegram updates could not be made durable: %s", exc)
            raise NetworkError("updates not on disk yet; not confirming them") from exc
        except TimeoutError:
            log.warning(
                "Telegram updates %s are not stored yet; not confirming them",
                sorted(self._unsettled),
            )
            raise NetworkError("updates not stored yet; not confirming them") from None

    def _settle(self, update_id: int) -> None:
        self._unsettled.discard(update_id)
        if not self._unsettled:
            self._settled.set()

    # -- inbound -------------------------------------------------------------------------------

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB's one handler (long polling): store the update, in order, before the next poll
        confirms it. A database that is down is retried here until it is back (the chat is
        told once), so nothing Telegram hands over is lost; stopping leaves it unconfirmed."""
        stored, told = False, False
        delay = 0.5
        try:
            while not stored:
                try:
                    # On disk before the next poll confirms the batch (``_before_poll``).
                    await self._receive(update, durable=False)
                    stored = True
                except StoreUnavailable as exc:
                    if not told:
                        told = True
                        await self._funnel(self._chat_of(update), exc, f"update {update.update_id}")
                    if not self._accepting:
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                except Exception as exc:
                    # Not a database problem: this update can never be stored as it is (the
                    # funnel says so), and holding it would hold every later one.
                    await self._funnel(self._chat_of(update), exc, f"update {update.update_id}")
                    stored = True
        finally:
            if stored:
                self._settle(update.update_id)

    async def _receive(self, update: Update, durable: bool = True) -> None:
        """One update, from either mode: answer a button press, note a membership change, and
        store a message (which queues its turn). Raises what storing raised."""
        if update.callback_query is not None:
            self._spawn(self._answer_callback(update))
        if update.my_chat_member is not None:
            self._spawn(self._membership(update.my_chat_member))
            return
        assert self.identity is not None
        inbound = normalise(update, self.identity, self.codec.decode)
        if inbound is not None:
            await self.service.accept(inbound, durable=durable)

    @staticmethod
    def _chat_of(update: Update) -> Target | None:
        chat = update.effective_chat
        return Target(CHANNEL, str(chat.id)) if chat is not None else None

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        # Errors PTB itself caught (a handler is not expected to raise past _on_update).
        log.error("Telegram update failed: %s", context.error, exc_info=context.error)

    async def _answer_callback(self, update: Update) -> None:
        query = update.callback_query
        assert query is not None
        stale = self.codec.decode(query.data or "") is None
        try:
            await self.caller.call(
                "answerCallbackQuery",
                lambda: query.answer(text=STALE_BUTTON if stale else None),
                paced=False,
            )
        except (ChannelError, BadRequest) as exc:
            # Answering late only leaves a spinner on the button; the message itself goes on.
            log.info("callback query %s not answered: %s", query.id, exc)

    async def _membership(self, change: ChatMemberUpdated) -> None:
        if change.new_chat_member.status in (ChatMemberStatus.BANNED, ChatMemberStatus.LEFT):
            await self._close_blocked(Target(CHANNEL, str(change.chat.id)))

    async def _funnel(self, target: Target | None, exc: Exception, what: str) -> None:
        """Log, and tell the customer politely (an update that could not be stored)."""
        log.error("Telegram %s failed: %s", what, exc, exc_info=exc)
        if target is None or isinstance(exc, ChatBlocked):
            return
        text = BUSY if isinstance(exc, StoreUnavailable) else APOLOGY
        try:
            await self._send_chunk(target, render_text(text), None, None)
        except (EsotericError, BadRequest) as again:
            log.error("could not apologise to chat %s: %s", target.chat_key, again)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:  # part of the error funnel: background work only logs
                log.error("Telegram background work failed: %s", exc, exc_info=exc)

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- outbound port ---------------------------------------------------------------------------

    @property
    def typing_chats(self) -> frozenset[tuple[str, str]]:
        """Chats showing the typing indicator now."""
        return frozenset(
            key
            for key, task in self._typing.items()
            if isinstance(task, asyncio.Task) and not task.done()
        )

    async def typing(self, target: Target) -> None:
        key = (target.chat_key, target.thread)
        if key not in self._typing:
            # A timer, not a task: most turns are answered within the grace and cancel it.
            self._typing[key] = asyncio.get_running_loop().call_later(
                self.config.typing_grace, self._typing_due, key, target
            )

    def _typing_due(self, key: tuple[str, str], target: Target) -> None:
        self._typing[key] = asyncio.create_task(self._keep_typing(target))

    async def _keep_typing(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.typing_max
        while loop.time() < deadline:
            try:
                await self.bot.send_chat_action(
                    int(target.chat_key), ChatAction.TYPING, message_thread_id=self._thread(target)
                )
            except TelegramError as exc:
                # Best effort: an indicator is not worth a retry or a flood-control penalty.
                log.debug("typing indicator failed for %s: %s", target.chat_key, exc)
                return
            await asyncio.sleep(self.config.typing_refresh)

    def _stop_typing(self, target: Target) -> None:
        task = self._typing.pop((target.chat_key, target.thread), None)
        if task is not None:
            task.cancel()

    async def send(self, target: Target, reply: Reply) -> None:
        self._stop_typing(target)
        chunks = render_chunks(reply)
        if not chunks:
            return
        markup = self._markup(target, reply)
        reply_to = self._quoted(target)
        try:
            for index, chunk in enumerate(chunks):
                last = index == len(chunks) - 1
                await self._send_chunk(
                    target, chunk, markup if last else None, reply_to if index == 0 else None
                )
            if reply.document is not None:
                await self._send_document(target, reply.document)
        except ChatBlocked:
            await self._close_blocked(target)
            raise

    def _markup(self, target: Target, reply: Reply) -> Any:
        if reply.request_contact and not is_group(target.chat_key):
            return contact_keyboard()
        if reply.choices:
            return inline_keyboard(reply.choices, self.codec)
        if reply.remove_keyboard and not is_group(target.chat_key):
            return ReplyKeyboardRemove()
        return None

    @staticmethod
    def _quoted(target: Target) -> int | None:
        """Group replies quote the message they answer (the turn says which)."""
        if target.reply_to and is_group(target.chat_key) and target.reply_to.isdigit():
            return int(target.reply_to)
        return None

    @staticmethod
    def _thread(target: Target) -> int | None:
        return int(target.thread) if target.thread else None

    async def _send_chunk(
        self, target: Target, chunk: Chunk, markup: Any, reply_to: int | None
    ) -> int:
        """Send one message; its ``message_id``."""
        bot = self._api
        options: dict[str, Any] = {
            "chat_id": int(target.chat_key),
            "message_thread_id": self._thread(target),
            "reply_markup": markup,
            "link_preview_options": NO_LINK_PREVIEW,
        }
        if reply_to is not None:
            options["reply_parameters"] = {
                "message_id": reply_to,
                "allow_sending_without_reply": True,
            }

        def send(text: str, parse_mode: str | None) -> Callable[[], Awaitable[Any]]:
            # A fresh dict per attempt: PTB edits the one it is given.
            return lambda: bot.post_json(
                "sendMessage", {**options, "text": text, "parse_mode": parse_mode}
            )

        chat, group = target.chat_key, is_group(target.chat_key)
        try:
            sent = await self.caller.call(
                "sendMessage", send(chunk.html, ParseMode.HTML), chat=chat, group=group
            )
        except BadRequest as exc:
            if not _is_parse_error(exc):
                raise ChannelError(f"sendMessage: {exc.message}") from exc
            log.warning("Telegram rejected the HTML (%s); sending plain text", exc.message)
            try:
                sent = await self.caller.call(
                    "sendMessage", send(chunk.plain, None), chat=chat, group=group
                )
            except BadRequest as again:
                raise ChannelError(f"sendMessage: {again.message}") from again
        return int(sent["message_id"])

    async def _edit(
        self, target: Target, message_id: int, chunk: Chunk, markup: Any, *, final: bool
    ) -> None:
        """Edit a sent message. Mid-stream edits are skipped rather than retried."""
        bot = self._api
        chat_id = int(target.chat_key)

        def edit(text: str, parse_mode: str | None) -> Callable[[], Awaitable[Any]]:
            return lambda: bot.post_json(
                "editMessageText",
                {
                    "chat_id": chat_id,
                    "message_id": message_id,
                    "text": text,
                    "parse_mode": parse_mode,
                    "reply_markup": markup,
                    "link_preview_options": NO_LINK_PREVIEW,
                },
            )

        chat, group = target.chat_key, is_group(target.chat_key)
        try:
            await self.caller.call(
                "editMessageText",
                edit(chunk.html, ParseMode.HTML),
                retry=final,
                chat=chat,
                group=group,
            )
        except BadRequest as exc:
            if _not_modified(exc):
                return
            if not _is_parse_error(exc):
                raise ChannelError(f"editMessageText: {exc.message}") from exc
            try:
                await self.caller.call(
                    "editMessageText", edit(chunk.plain, None), retry=final, chat=chat, group=group
                )
            except BadRequest as again:
                if not _not_modified(again):
                    raise ChannelError(f"editMessageText: {again.message}") from again

    async def _close_blocked(self, target: Target) -> None:
        closed = await self.service.close_conversation(
            CHANNEL, target.chat_key, target.thread, reason="blocked"
        )
        if closed:
            log.info("Telegram chat %s blocked the bot; conversation closed", target.chat_key)

    # -- streaming port --------------------------------------------------------------------------

    async def stream(self, target: Target, reply: ReplyStream) -> None:
        """Send the first words, edit as more arrive (paced per chat), then make the delivered
        messages exactly the final reply.

        The first message waits up to ``first_send_hold`` after the stream starts: a reply
        written by then goes out once, whole, with no edits. While the send budget is saturated
        nothing is previewed or edited: the reply goes out once, complete, when it is ready."""
        loop = asyncio.get_running_loop()
        interval = (
            self.config.group_edit_interval
            if is_group(target.chat_key)
            else self.config.edit_interval
        )
        reply_to = self._quoted(target)
        text = shown = ""
        message_id: int | None = None
        next_try = 0.0  # no preview or edit is tried before this

        async def show() -> None:
            """Bring what the chat sees up to date, if the chat's pace and the budget allow."""
            nonlocal message_id, shown, next_try
            preview = split_text(text)[0] if text.strip() else ""
            now = loop.time()
            if not preview or preview == shown or now < next_try:
                return
            if await self._saturated():
                next_try = now + interval  # looked at again later; else sent whole at the end
                return
            if message_id is None:
                self._stop_typing(target)
                message_id = await self._send_chunk(target, render_text(preview), None, reply_to)
                shown = preview
            else:
                try:
                    await self._edit(target, message_id, render_text(preview), None, final=False)
                    shown = preview
                except (FloodLimited, ChannelError) as exc:
                    if isinstance(exc, ChatBlocked):
                        raise
                    log.debug("streaming edit skipped: %s", exc)
            next_try = loop.time() + interval

        deltas = aiter(reply)
        waiting: asyncio.Task[str | None] | None = None
        self._streaming += 1
        try:
            # The hold: gather what is written until it ends (or the reply does).
            ended = False
            hold_until = loop.time() + self.config.first_send_hold
            while (left := hold_until - loop.time()) > 0:
                waiting = waiting or asyncio.ensure_future(_next_delta(deltas))
                done, _ = await asyncio.wait((waiting,), timeout=left)
                if not done:
                    break
                delta, waiting = waiting.result(), None
                if delta is None:
                    ended = True
                    break
                text += delta
            while not ended:
                await show()
                if waiting is not None:
                    delta, waiting = await waiting, None
                else:
                    delta = await _next_delta(deltas)
                if delta is None:
                    break
                text += delta
            try:
                final = await reply.final()
            except Exception:
                # The turn failed after part of the reply showed: say so where it is showing.
                if message_id is not None:
                    with contextlib.suppress(ChannelError, BadRequest):
                        await self._edit(
                            target,
                            message_id,
                            render_text(shown + " … (interrupted)"),
                            None,
                            final=True,
                        )
                raise
            if message_id is None:
                await self.send(target, final)
                return
            await self._finish_stream(target, message_id, final, shown)
        except ChatBlocked:
            await self._close_blocked(target)
            raise
        finally:
            self._streaming -= 1
            if waiting is not None:
                waiting.cancel()

    async def _saturated(self) -> bool:
        try:
            load = await self.budget.load()
        except SharedStateUnavailable:
            return False  # the shared budget is unreachable: sending will say so
        demand = load.backlog
        rate = self.config.messages_per_second
        if rate is not None:
            demand += self._streaming / rate
        limit = self.config.saturated_after
        return demand >= limit or load.busy_for >= limit

    async def _finish_stream(
        self, target: Target, message_id: int, final: Reply, shown: str
    ) -> None:
        chunks = render_chunks(final)
        if final.request_contact and not is_group(target.chat_key):
            # A reply keyboard cannot be added by an edit: replace the streamed message.
            try:
                await self.caller.call(
                    "deleteMessage",
                    lambda: self.bot.delete_message(int(target.chat_key), message_id),
                    chat=target.chat_key,
                    group=is_group(target.chat_key),
                )
            except (ChannelError, BadRequest) as exc:
                log.info("could not replace the streamed message: %s", exc)
            await self.send(target, final)
            return
        if not chunks:
            chunks = [render_text(reply_text(final) or "…")]
        markup = self._markup(target, final)
        first_markup = markup if len(chunks) == 1 else None
        if isinstance(first_markup, ReplyKeyboardRemove):
            first_markup = None  # only inline keyboards can be edited in
        if len(chunks) == 1 and first_markup is None and chunks[0] == render_text(shown):
            return  # the preview is the whole reply already: an edit would change nothing
        try:
            await self._edit(target, message_id, chunks[0], first_markup, final=True)
        except ChannelError as exc:
            if isinstance(exc, ChatBlocked):
                raise
            # The streamed message is gone (deleted by the user, say): send the reply afresh.
            log.info("final edit failed (%s); sending the reply as new messages", exc)
            await self.send(target, final)
            return
        for index, chunk in enumerate(chunks[1:], start=1):
            last = index == len(chunks) - 1
            await self._send_chunk(target, chunk, markup if last else None, None)


async def _next_delta(deltas: AsyncIterator[str]) -> str | None:
    """The next piece of a streamed reply, or ``None`` at its end."""
    try:
        return await anext(deltas)
    except StopAsyncIteration:
        return None
