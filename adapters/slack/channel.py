"""The Slack channel: the sales team's assistant, on the Events API or Socket Mode.

slack-bolt's ``AsyncApp`` dispatches; this module only translates. A message is stored (and its
turn queued in the core) before bolt acknowledges it, which takes milliseconds, well inside
Slack's 3 seconds; a message that could not be stored gets an error status, so Slack delivers it
again. Slow work (the turn itself, a desk command) runs after the acknowledgement. Retried
deliveries are left to the core's dedup on ``event_id``; the ``X-Slack-Retry-Num`` header is
never a reason to drop an event (Socket Mode sets it to "0" on first deliveries).

A slash command or a button press has no such id, so a signed one sent again inside the 5-minute
signature window would run again: each one's signature is remembered (``ReplayGuard``) for that
window, and a second delivery is refused with 401. Slack does not retry these requests.

Lead data (``/esoteric lead``, ``leads today``, the lead and handoff buttons, ``release``, a
rep's relay to a customer) is for members of the sales channel and for admins; membership comes
from ``conversations.members``, cached for a minute. When Slack cannot say, the answer is no.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from fastapi import APIRouter, Request, Response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.events import (
    CHANNEL,
    BotIdentity,
    clean_text,
    first_audio,
    from_person,
    is_dm,
    mentions,
    to_inbound,
)
from adapters.slack.members import ChannelMembers, MembersUnknown
from adapters.slack.quotes import QuoteNotShared, SlackQuotes
from adapters.slack.render import (
    ACTION_PATTERN,
    DESK_PREFIX,
    HANDOFF_ACTION_PATTERN,
    QUOTE_ACTION,
    SlackMessage,
    lead_card,
    preview,
    render,
)
from core.admin import NAMES as ADMIN_NAMES
from core.admin import AdminService
from core.conversation import ConversationService
from core.errors import ChannelError, InputError, RetryLater, StoreUnavailable
from core.handoff import CardRef, HandoffService, LeadCard, RelayOutcome
from core.messages import Attachment, Reply, Target
from core.ports import ReplyStream
from core.ratelimit import SharedStateUnavailable
from core.replay import LocalReplayGuard, ReplayGuard
from core.salesdesk import COMMAND, QUOTE_USAGE, Access, DeskInputError, SalesDesk, parse_quote_args
from core.voice import (
    MAX_UPLOAD_BYTES,
    SUPPORTED_FORMATS,
    AudioClip,
    Transcriber,
    VoiceError,
    audio_format,
)

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
# Slack refuses requests signed more than five minutes from now (replays); so do we.
MAX_CLOCK_SKEW = 300
_MAX_REMEMBERED = 10_000
# How long one file download from Slack may take.
DOWNLOAD_TIMEOUT = 30.0
# How long a rep's voice clip may take to be transcribed before the rep is told it was not.
REP_CLIP_DEADLINE = 30.0
_VOICE_UNHEARD = (
    "Sorry, I couldn't transcribe that voice clip, so nothing was sent to the customer. "
    "Please type your message."
)
_VOICE_OFF = (
    "Voice clips can't be transcribed here right now (no transcription service is set up), so "
    "nothing was sent to the customer. Please type your message."
)
_HANDOFF_REFUSED = {
    Access.DENIED: "Sorry, only the sales team (members of the sales channel) and Esoteric "
    "admins can claim, answer or release a customer's conversation.",
    Access.UNVERIFIED: "Sorry, I couldn't confirm just now that you're on the sales team, so "
    "that was not done. Please try again in a minute.",
}


@dataclass(frozen=True)
class SlackConfig:
    # Secrets stay out of repr: a config in a log line or a traceback shows none of them.
    bot_token: str = field(repr=False)
    signing_secret: str | None = field(default=None, repr=False)
    app_token: str | None = field(default=None, repr=False)  # set: Socket Mode, not HTTP events
    api_url: str | None = None  # the Web API base, e.g. http://127.0.0.1:8080/api/
    # Seconds between chat.update calls while a reply streams (chat.update is about 1/s).
    stream_interval: float = 1.0
    rate_limit_retries: int = 3
    # ESOTERIC_SLACK_SALES_CHANNEL: where lead cards go; its card threads relay to customers.
    # Its members (and admins) are the sales team: they alone see and change lead data.
    sales_channel: str | None = None
    # Slack user ids of the ESOTERIC_ADMINS entries "slack:U...": lead data without membership.
    admins: frozenset[str] = frozenset()
    # How long a conversations.members answer is trusted, and how long to wait for one.
    members_ttl: float = 60.0
    members_timeout: float = 5.0

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)

    @property
    def base_url(self) -> str:
        url = self.api_url or DEFAULT_API_URL
        return url if url.endswith("/") else url + "/"


class _Recent:
    """A bounded set: threads the bot is known to be in, and the like."""

    def __init__(self, size: int = _MAX_REMEMBERED) -> None:
        self._items: OrderedDict[Any, None] = OrderedDict()
        self._size = size

    def add(self, item: Any) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def discard(self, item: Any) -> None:
        self._items.pop(item, None)

    def __contains__(self, item: object) -> bool:
        return item in self._items


class SlackChannel:
    name = CHANNEL
    # The core's AudioSource: Slack serves files of any size; Groq takes up to 25 MB.
    max_audio_bytes = MAX_UPLOAD_BYTES

    def __init__(
        self,
        service: ConversationService,
        desk: SalesDesk,
        config: SlackConfig,
        *,
        handoffs: HandoffService | None = None,
        admin: AdminService | None = None,
        replay: ReplayGuard | None = None,
        transcriber: Transcriber | None = None,
    ) -> None:
        if not config.socket_mode and not config.signing_secret:
            raise ChannelError("Slack HTTP events need SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN)")
        self.service = service
        self.desk = desk
        self.config = config
        self.handoffs = handoffs if config.sales_channel else None
        self.admin = admin
        # Hears a rep's voice clips in a lead card's thread (the customer's are the core's).
        self.transcriber = transcriber
        # Signatures of form requests already run; the composition root passes a shared one.
        self.replay: ReplayGuard = replay if replay is not None else LocalReplayGuard()
        # Relays from one card thread run one at a time, so the customer sees them in order.
        self._relay_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.client = AsyncWebClient(
            token=config.bot_token,
            base_url=config.base_url,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                # Honours Retry-After on 429 (chat.postMessage is about 1/s per channel).
                AsyncRateLimitErrorRetryHandler(max_retry_count=config.rate_limit_retries),
            ],
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=config.signing_secret or "",
            # Listeners only acknowledge and schedule, so running them before the response
            # keeps bolt from spawning untracked tasks of its own.
            process_before_response=True,
            request_verification_enabled=not config.socket_mode,
        )
        # Quotes as PDF files (the files:write scope).
        self.quotes = SlackQuotes(self.client, desk)
        self.members = (
            ChannelMembers(
                self.client,
                config.sales_channel,
                ttl=config.members_ttl,
                timeout=config.members_timeout,
            )
            if config.sales_channel
            else None
        )
        self.identity: BotIdentity | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = _Recent()
        # Threads conversations.replies showed the bot is not in, so busy channels cost one
        # lookup per thread rather than one per message.
        self._outside = _Recent()
        self._names: OrderedDict[str, str | None] = OrderedDict()
        # A rep's voice clips being relayed, so a redelivery is not transcribed twice.
        self._clips = _Recent()
        self._accepting = True
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.command(COMMAND)(self._on_command)
        self.app.action(re.compile(ACTION_PATTERN))(self._on_action)
        self.app.action(re.compile(HANDOFF_ACTION_PATTERN))(self._on_handoff_action)
        self.app.action(QUOTE_ACTION)(self._on_quote_action)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        # One pooled HTTP session for every Web API call instead of a connection per call.
        self._session = aiohttp.ClientSession()
        self.client.session = self._session
        try:
            auth = await self.client.auth_test()
        except SlackClientError as exc:
            await self._close_session()
            raise ChannelError(f"Slack rejected the bot token or is unreachable: {exc}") from exc
        self.identity = BotIdentity(
            str(auth.get("user_id", "")), str(auth.get("bot_id", "")), str(auth.get("team", ""))
        )
        if self.config.socket_mode:
            self._socket = AsyncSocketModeHandler(self.app, self.config.app_token)
            try:
                await self._socket.connect_async()
            except (SlackClientError, aiohttp.ClientError, OSError) as exc:
                await self._socket.close_async()
                self._socket = None
                await self._close_session()
                raise ChannelError(f"Slack Socket Mode could not connect: {exc}") from exc
        log.info(
            "slack channel started (%s) as %s",
            "socket mode" if self.config.socket_mode else "HTTP events",
            self.identity.user_id,
        )

    async def stop(self) -> None:
        self._accepting = False
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        await self.idle()
        await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            self.client.session = None

    async def idle(self) -> None:
        """Wait until every background task this channel started, and every turn it queued in
        this process, has finished."""
        while True:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self.service.idle()
            if not self._tasks:
                return

    async def check(self) -> tuple[bool, str]:
        if self.identity is None:
            return False, "not started"
        if self._socket is not None and not await self._socket.client.is_connected():
            return False, "socket mode disconnected"
        # /ready is public: it says the channel works, not who the bot is.
        return True, "socket mode" if self.config.socket_mode else "HTTP events"

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=f"slack:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- voice clips (the core's AudioSource) -----------------------------------------------------

    async def fetch_audio(self, ref: dict[str, Any]) -> AudioClip:
        """A shared audio file through ``files.info`` and its private download URL (which wants
        the bot token, and the files:read scope), named with an extension Groq accepts."""
        file_id = ref.get("file_id")
        if not file_id:
            raise VoiceError("unavailable", "the audio file has no Slack file id")
        try:
            info = (await self.client.files_info(file=str(file_id))).get("file") or {}
        except SlackApiError as exc:
            status = exc.response.status_code
            if status == 429 or status >= 500:
                raise VoiceError("failed", f"Slack files.info failed ({status})") from exc
            error = exc.response.get("error")
            raise VoiceError("unavailable", f"Slack refused files.info: {error}") from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            raise VoiceError("failed", f"Slack files.info failed: {exc}") from exc
        size = info.get("size")
        if isinstance(size, int) and size > self.max_audio_bytes:
            raise VoiceError("too_large", f"the audio file is {size} bytes")
        url = str(info.get("url_private_download") or info.get("url_private") or "")
        if not url:
            raise VoiceError("unavailable", "Slack gave no download URL for the audio file")
        mime = str(info.get("mimetype") or ref.get("mime") or "") or None
        data = await self._download(url)
        return AudioClip(data, _clip_name(info, ref, mime), mime)

    async def _download(self, url: str) -> bytes:
        if not self._trusted(url):
            # The bot token goes to Slack only.
            raise VoiceError("unavailable", f"not a Slack file URL: {url}")
        if self._session is None:
            raise VoiceError("failed", "the Slack channel is not started")
        headers = {"Authorization": f"Bearer {self.config.bot_token}"}
        try:
            async with self._session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT)
            ) as response:
                status = response.status
                if status == 429 or status >= 500:
                    raise VoiceError("failed", f"the Slack file download failed ({status})")
                if status != 200:
                    raise VoiceError("unavailable", f"Slack refused the download ({status})")
                if response.content_type == "text/html":
                    # Slack answers a download it will not allow with its sign-in page.
                    raise VoiceError("unavailable", "Slack served a sign-in page, not the file")
                data = await response.content.read(self.max_audio_bytes + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise VoiceError("failed", f"the Slack file download failed: {exc}") from exc
        if len(data) > self.max_audio_bytes:
            raise VoiceError("too_large", "the audio file is larger than Slack said")
        return data

    def _trusted(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com")):
            return True
        api = urlsplit(self.config.base_url)  # a stand-in or an enterprise proxy
        return (parts.scheme, parts.netloc) == (api.scheme, api.netloc)

    # -- HTTP events -----------------------------------------------------------------------------

    def router(self) -> APIRouter | None:
        if self.config.socket_mode:
            return None
        router = APIRouter()
        router.add_api_route(
            "/slack/events", self._http_events, methods=["POST"], include_in_schema=False
        )
        return router

    async def _http_events(self, request: Request) -> Response:
        raw = await request.body()
        headers: dict[str, str | Sequence[str]] = dict(request.headers)
        if not signature_ok(
            self.config.signing_secret or "",
            raw,
            request.headers.get("x-slack-request-timestamp", ""),
            request.headers.get("x-slack-signature", ""),
        ):
            # Also refuses a timestamp more than 5 minutes away (replays).
            return _error(401, "invalid or expired Slack signature")
        content_type = request.headers.get("content-type", "")
        problem = _malformed(raw, content_type)
        if problem is not None:
            return _error(400, problem)
        if not self._accepting:
            # Slack retries later; the next process run picks the event up.
            return _error(503, "shutting down")
        if content_type.startswith("application/x-www-form-urlencoded"):
            # A slash command or a button press, which carry no id to deduplicate on. (Events
            # API callbacks are deduplicated by event_id in the core, and Slack re-delivers
            # those on purpose.)
            refused = await self._replayed(
                request.headers.get("x-slack-request-timestamp", ""),
                request.headers.get("x-slack-signature", ""),
            )
            if refused is not None:
                return refused
        bolt_response = await self.app.async_dispatch(
            AsyncBoltRequest(body=raw.decode("utf-8"), query=request.url.query, headers=headers)
        )
        return Response(
            status_code=bolt_response.status,
            content=bolt_response.body,
            headers=bolt_response.first_headers_without_set_cookie(),
        )

    async def _replayed(self, timestamp: str, signature: str) -> Response | None:
        """401 for a signature already seen inside its window, 503 when that cannot be known."""
        # Remembered as long as the signature would pass: five minutes, more when Slack's
        # clock is ahead of ours.
        ttl = max(MAX_CLOCK_SKEW, int(timestamp) + MAX_CLOCK_SKEW - time.time()) + 1
        try:
            first = await self.replay.first_time(f"{CHANNEL}:{signature}", ttl)
        except SharedStateUnavailable:
            log.exception("replay check unavailable; request refused")
            return _error(503, "could not check for a replayed request; try again")
        if not first:
            log.warning("replayed Slack request refused (timestamp %s)", timestamp)
            return _error(401, "replayed Slack request")
        return None

    # -- who may see lead data -------------------------------------------------------------------

    async def lead_access(self, actor: str) -> Access:
        """The desk's access check: ``slack:<user id>`` of a sales channel member or an admin."""
        channel, _, user = actor.partition(":")
        return await self.access(user) if channel == CHANNEL else Access.DENIED

    async def access(self, user: str) -> Access:
        if not user:
            return Access.DENIED
        if user in self.config.admins:
            return Access.GRANTED
        if self.members is None:
            # No sales channel, no sales team: lead data is for admins only.
            return Access.DENIED
        try:
            member = await self.members.contains(user)
        except MembersUnknown as exc:
            log.warning("sales channel membership of %s unknown: %s", user, exc)
            return Access.UNVERIFIED
        return Access.GRANTED if member else Access.DENIED

    async def _handoff_refusal(self, user: str, action: str, target: str | None) -> str | None:
        """Why ``user`` may not do a handoff action (audited), or ``None`` when they may."""
        verdict = await self.access(user)
        if verdict is Access.GRANTED:
            return None
        await self.desk.record_refusal(f"{CHANNEL}:{user}", action, target, verdict)
        return _HANDOFF_REFUSED[verdict]

    # -- listeners: acknowledge, then work in the background ---------------------------------------

    def _bot(self, context: AsyncBoltContext) -> BotIdentity | None:
        if context.bot_user_id:
            return BotIdentity(context.bot_user_id, context.bot_id or "")
        return self.identity

    async def _on_mention(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        bot = self._bot(context)
        channel = str(event.get("channel", ""))
        # A DM arrives as message.im too; answering both would answer twice.
        if not channel or is_dm(channel) or not from_person(event, bot):
            return
        thread = str(event.get("thread_ts") or event["ts"])
        self._joined(channel, thread)
        await self._receive(event, body.get("event_id"), thread, bot)

    async def _on_message(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        bot = self._bot(context)
        channel = str(event.get("channel", ""))
        if not channel or not from_person(event, bot):
            return
        event_id = body.get("event_id")
        if is_dm(channel) or event.get("channel_type") == "im":
            thread = str(event.get("thread_ts") or "")
            await self._receive(event, event_id, thread, bot)
            return
        thread_ts = event.get("thread_ts")
        text = str(event.get("text") or "")
        mentioned = bot is not None and mentions(text, bot.user_id)
        if (
            thread_ts
            and not mentioned
            and self.handoffs is not None
            and channel == self.config.sales_channel
        ):
            # A rep in a lead card's thread talks to the customer; "@Esoteric ..." there is a
            # question for the bot (app_mention), not for the customer.
            clip = first_audio(event)
            if clip is not None:
                await self._relay_clip(event, event_id, str(thread_ts), bot, clip)
            else:
                await self._relay(event, event_id, str(thread_ts), bot)
            return
        if not thread_ts or (bot is not None and mentions(text, bot.user_id)):
            # Top-level chatter is not for the bot; a mention comes as app_mention.
            return
        await self._follow_up(event, event_id, str(thread_ts), bot)

    async def _on_command(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        self._spawn(
            self._run_desk(
                str(body.get("text") or ""),
                str(body.get("user_id", "")),
                str(body.get("channel_id", "")),
                body.get("response_url"),
                replace=False,
            ),
            "command",
        )

    async def _on_action(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id", ""))
        value = str(action.get("value") or "")
        channel = str(
            (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        )
        if str(action.get("action_id", "")).startswith("esoteric_desk"):
            self._spawn(
                self._run_desk(
                    value.removeprefix(DESK_PREFIX.strip()).strip(),
                    user,
                    channel,
                    body.get("response_url"),
                    replace=True,
                ),
                "desk-action",
            )
            return
        # A quick-reply button: the person "says" the button's value in that conversation.
        message = body.get("message") or {}
        thread = str(message.get("thread_ts") or ("" if is_dm(channel) else message.get("ts", "")))
        event = {"channel": channel, "user": user, "text": value, "ts": action.get("action_ts")}
        event_id = f"action:{action.get('action_ts')}:{user}"
        await self._receive(event, event_id, thread, self.identity)

    async def _on_handoff_action(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id", ""))
        channel = str(
            (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        )
        value = str(action.get("value") or "")
        kind = str(action.get("action_id", "")).rsplit("_", 1)[-1]
        self._spawn(self._handoff_button(kind, value, user, channel), f"handoff-{kind}")

    async def _on_quote_action(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        user = str((body.get("user") or {}).get("id", ""))
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        message = body.get("message") or {}
        # The card's own thread: the card is a top-level message, its ts the thread's.
        thread = str(message.get("thread_ts") or message.get("ts") or container.get("message_ts"))
        value = str(action.get("value") or "")
        self._spawn(self._quote_button(value, user, channel, thread), "quote-pdf")

    # -- background work: the one error funnel --------------------------------------------------

    async def _quote_button(self, value: str, user: str, channel: str, thread: str) -> None:
        """ "Send quote PDF" on a lead card: the lead's quote shared into the card's thread, for
        the sales team and admins only (a quote for a lead is lead data)."""
        if not value.isdigit():
            return
        actor, target = f"{CHANNEL}:{user}", f"lead:{value}"
        notice: str | None = None
        try:
            verdict = await self.access(user)
            if verdict is not Access.GRANTED:
                await self.desk.record_refusal(actor, "quote_sent", target, verdict)
                notice = verdict.refusal
            else:
                document = await self.quotes.for_lead(int(value))
                await self.quotes.share(
                    document,
                    actor=actor,
                    channel=channel,
                    thread_ts=thread,
                    comment=f"Loan quote {document.reference} for lead #{value} "
                    f"({self.quotes.summary(document)}), sent by <@{user}>.",
                    target=target,
                )
        except (DeskInputError, InputError) as exc:
            notice = f"Sorry, I can't quote lead #{value}: {exc}"
        except QuoteNotShared as exc:
            log.warning("lead quote not shared: %s", exc, extra={"lead": value})
            notice = f"Sorry, the quote's PDF could not be shared (Slack said: {exc.error or exc})."
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("lead quote failed", extra={"lead": value})
            notice = "Sorry, that didn't work on my side. Please try again."
        if notice is not None:
            try:
                await self.send_ephemeral(channel, user, Reply(notice))
            except ChannelError:
                log.exception("quote notice not delivered")

    async def _handoff_button(self, kind: str, value: str, user: str, channel: str) -> None:
        if self.handoffs is None or not value.isdigit():
            return
        try:
            notice = await self._handoff_refusal(user, f"handoff_{kind}", f"handoff:{value}")
            if notice is None:
                notice = await self._press(kind, int(value), user)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handoff %s failed", kind, extra={"handoff": value})
            notice = "Sorry, that didn't work on my side. Please try again."
        if notice is not None:
            try:
                await self.send_ephemeral(channel, user, Reply(notice))
            except ChannelError:
                log.exception("handoff notice not delivered")

    async def _press(self, kind: str, handoff_id: int, user: str) -> str | None:
        """Claim or release for a rep allowed to; what to tell them when it did not happen."""
        assert self.handoffs is not None
        if kind == "claim":
            result = await self.handoffs.claim(handoff_id, user, await self._user_name(user))
            if result.won:
                return None
            return result.problem or f"{result.holder_name} already has this conversation."
        released = await self.handoffs.release(user, handoff_id)
        return None if released.released else released.message

    async def _relay_clip(
        self,
        event: dict[str, Any],
        event_id: Any,
        thread: str,
        bot: BotIdentity | None,
        clip: Attachment,
    ) -> None:
        """A rep's voice clip in a card's thread: transcribed and relayed after the
        acknowledgement (it takes seconds), still in order with the thread's other relays."""
        key = str(event_id or clip.file_id)
        if key in self._clips:
            return  # a redelivery while (or after) it is heard: the first one relays it
        self._clips.add(key)
        lock = self._relay_lock(thread)
        # A free lock is taken at once, without waiting: what the rep writes next waits for
        # the clip. A busy one is waited for in the background.
        held = not lock.locked()
        if held:
            await lock.acquire()
        self._spawn(self._relay(event, event_id, thread, bot, clip, lock, held), "voice-relay")

    def _relay_lock(self, thread: str) -> asyncio.Lock:
        """The thread's relay lock, counted as used until ``_relay`` is done with it."""
        lock, users = self._relay_locks.get(thread) or (asyncio.Lock(), 0)
        self._relay_locks[thread] = (lock, users + 1)
        return lock

    async def _relay(
        self,
        event: dict[str, Any],
        event_id: Any,
        thread: str,
        bot: BotIdentity | None,
        clip: Attachment | None = None,
        lock: asyncio.Lock | None = None,
        held: bool = False,
    ) -> None:
        """Relay a rep's message. ``lock``: the thread's lock, counted for this relay already
        (and taken for it, when ``held``)."""
        assert self.handoffs is not None
        channel, user = str(event["channel"]), str(event["user"])
        lock = lock or self._relay_lock(thread)
        said: str | None = None
        try:
            if not held:
                await lock.acquire()
            try:
                # Checked in turn, so a rep's messages still reach the customer in order.
                refused = await self._handoff_refusal(user, "handoff_relay", f"card:{thread}")
                if refused is not None:
                    await self._apologise_to(channel, user, refused)
                    return
                text = clean_text(str(event.get("text") or ""), bot)
                if clip is not None:
                    said = await self._hear_clip(channel, user, clip)
                    if said is None:
                        return
                    text = f"{text}\n(voice note) {said}" if text else f"(voice note) {said}"
                result = await self.handoffs.relay_from_rep(
                    channel, thread, user, text, str(event_id) if event_id else None
                )
            finally:
                lock.release()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay to the customer failed", extra={"event_id": event_id})
            await self._apologise_to(channel, user, "Sorry, that message could not be relayed.")
            return
        finally:
            lock, users = self._relay_locks[thread]
            if users == 1:
                del self._relay_locks[thread]
            else:
                self._relay_locks[thread] = (lock, users - 1)
        if result.outcome == RelayOutcome.NOT_A_CARD:
            if said is not None:
                # Thread talk with the bot: what was said, not the clip (heard once).
                event = {**event, "text": f"{event.get('text') or ''}\n{said}".strip()}
                event.pop("files", None)
            await self._follow_up(event, event_id, thread, bot)
        elif result.notice is not None:
            await self._apologise_to(channel, user, result.notice)
        elif said is not None:
            await self._apologise_to(channel, user, f"Sent to the customer as: (voice note) {said}")

    async def _hear_clip(self, channel: str, user: str, clip: Attachment) -> str | None:
        """What a rep said in a voice clip, or ``None`` once the rep is told it was not heard."""
        if self.transcriber is None:
            await self._apologise_to(channel, user, _VOICE_OFF)
            return None
        if clip.size is not None and clip.size > self.max_audio_bytes:
            await self._apologise_to(
                channel,
                user,
                f"That voice clip is too large to transcribe ({clip.size / 1_048_576:.1f} MB; "
                f"the limit is {self.max_audio_bytes / 1_048_576:.0f} MB), so nothing was sent "
                "to the customer. Please type your message.",
            )
            return None
        try:
            audio = await self.fetch_audio(clip.audio_ref())
            heard = await self.transcriber.transcribe(audio, time.monotonic() + REP_CLIP_DEADLINE)
        except VoiceError as exc:
            log.warning("a rep's voice clip was not transcribed (%s): %s", exc.reason, exc)
            await self._apologise_to(channel, user, _VOICE_UNHEARD)
            return None
        if not heard.text:
            await self._apologise_to(channel, user, _VOICE_UNHEARD)
            return None
        return heard.text

    async def _apologise_to(self, channel: str, user: str, text: str) -> None:
        try:
            await self.send_ephemeral(channel, user, Reply(text))
        except ChannelError:
            log.exception("notice to %s not delivered", user)

    # -- the sales desk port (lead cards) ---------------------------------------------------------

    async def post_card(self, card: LeadCard) -> CardRef:
        channel = self.config.sales_channel
        if not channel:
            raise ChannelError("ESOTERIC_SLACK_SALES_CHANNEL is not set")
        ts = await self._post(Target(CHANNEL, channel), lead_card(card))
        return CardRef(channel, ts)

    async def update_card(self, ref: CardRef, card: LeadCard) -> None:
        await self._update(Target(CHANNEL, ref.channel), ref.ts, lead_card(card))

    async def post_in_thread(self, ref: CardRef, text: str, *, broadcast: bool = False) -> None:
        for message in render(Reply(text)):
            try:
                await self.client.chat_postMessage(
                    channel=ref.channel,
                    thread_ts=ref.ts,
                    text=message.text,
                    blocks=message.blocks,
                    reply_broadcast=broadcast,
                    unfurl_links=False,
                )
            except SlackClientError as exc:
                raise ChannelError(f"Slack refused chat.postMessage: {exc}") from exc

    async def _receive(
        self, event: dict[str, Any], event_id: Any, thread: str, bot: BotIdentity | None
    ) -> None:
        """Store a message (its turn is queued in the core). Raises when it could not be
        stored: bolt then answers with an error status and Slack delivers it again."""
        try:
            name = await self._user_name(str(event["user"]))
            inbound = to_inbound(event, str(event_id) if event_id else None, thread, bot, name)
            await self.service.accept(inbound)
        except StoreUnavailable:
            log.exception("slack message not stored", extra={"event_id": event_id})
            raise

    async def _follow_up(
        self, event: dict[str, Any], event_id: Any, thread: str, bot: BotIdentity | None
    ) -> None:
        try:
            joined = await self._in_thread(str(event["channel"]), thread, bot)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not tell whether the bot is in a thread")
            return
        if joined:
            await self._receive(event, event_id, thread, bot)

    async def _in_thread(self, channel: str, thread: str, bot: BotIdentity | None) -> bool:
        """Whether the bot took part in a thread: remembered, or read from its replies."""
        key = (channel, thread)
        if key in self._threads:
            return True
        if bot is None or key in self._outside:
            return False
        response = await self.client.conversations_replies(channel=channel, ts=thread, limit=200)
        for message in response.get("messages") or []:
            if message.get("user") == bot.user_id or (
                bot.bot_id and message.get("bot_id") == bot.bot_id
            ):
                self._joined(channel, thread)
                return True
        self._outside.add(key)
        return False

    def _joined(self, channel: str, thread: str) -> None:
        self._threads.add((channel, thread))
        self._outside.discard((channel, thread))

    async def _user_name(self, user: str) -> str | None:
        if user in self._names:
            return self._names[user]
        name: str | None = None
        try:
            info = (await self.client.users_info(user=user)).get("user") or {}
            profile = info.get("profile") or {}
            name = profile.get("display_name") or info.get("real_name") or info.get("name")
        except SlackApiError as exc:
            # Slack answered (user_not_found, missing scope): remember, and answer without it.
            log.warning("users.info refused for %s: %s", user, exc.response.get("error"))
        except SlackClientError as exc:
            # A name is a nicety: answer without it, and ask again next time.
            log.warning("users.info failed for %s: %s", user, exc)
            return None
        self._names[user] = name
        while len(self._names) > _MAX_REMEMBERED:
            self._names.popitem(last=False)
        return name

    async def _run_desk(
        self, text: str, user: str, channel: str, response_url: Any, replace: bool
    ) -> None:
        words = text.split()
        first = words[0].lower() if words else "help"
        actor = f"{CHANNEL}:{user}"
        try:
            if first == "release" and self.handoffs is not None:
                reply = await self._release_command(user, words[1:])
            elif first == "quote":
                reply = await self._quote_command(words[1:], user, channel)
            elif self.admin is not None and first in ADMIN_NAMES - {"help"}:
                # "help" stays the desk's list; "/esoteric admin help" is the admins' one.
                reply = await self.admin.run_text(actor, text)
            else:
                reply = await self.desk.run(text, actor=actor, access=self.lead_access)
                if first == "help":
                    reply = Reply(
                        reply.text
                        + f"\n- {COMMAND} {QUOTE_USAGE}"
                        + f"\n- {COMMAND} release [ID]: hand a customer back to the bot"
                        + f"\n- {COMMAND} admin help: the admin commands (admins only)",
                        reply.choices,
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("desk command failed", extra={"command": text})
            reply = Reply("Sorry, that command failed on my side. Please try again.")
        try:
            await self.send_ephemeral(channel, user, reply, response_url, replace)
        except ChannelError:
            log.exception("desk answer not delivered")

    async def _quote_command(self, args: list[str], user: str, channel: str) -> Reply:
        """``/esoteric quote 25L home 20y``: the quote's PDF shared in the channel the command
        was run in (slash commands cannot be run in a thread); the rep is told what was sent."""
        try:
            document = self.quotes.document(parse_quote_args(args, self.desk.catalogue))
        except DeskInputError as exc:
            return Reply(str(exc))
        except InputError as exc:
            return Reply(f"Sorry, I can't quote that: {exc}.")
        summary = self.quotes.summary(document)
        try:
            await self.quotes.share(
                document,
                actor=f"{CHANNEL}:{user}",
                channel=channel,
                comment=f"Loan quote {document.reference} ({summary}), for <@{user}>.",
            )
        except QuoteNotShared as exc:
            log.warning("quote not shared in %s: %s", channel, exc)
            return Reply(
                f"Sorry, I couldn't share the quote's PDF here (Slack said: {exc.error or exc}). "
                f"Invite me to this channel, or run {COMMAND} quote in a DM with me."
            )
        return Reply(f"Shared quote {document.reference} in this channel: {summary}.")

    async def _release_command(self, user: str, args: list[str]) -> Reply:
        assert self.handoffs is not None
        if len(args) > 1 or (args and not args[0].lstrip("#").isdigit()):
            return Reply(f"Usage: {COMMAND} release [ID]")
        handoff_id = int(args[0].lstrip("#")) if args else None
        target = f"handoff:{handoff_id}" if handoff_id is not None else None
        refused = await self._handoff_refusal(user, "handoff_release", target)
        if refused is not None:
            return Reply(refused)
        return Reply((await self.handoffs.release(user, handoff_id)).message)

    # -- outbound port -----------------------------------------------------------------------------

    async def send(self, target: Target, reply: Reply) -> None:
        for message in render(reply):
            await self._post(target, message)

    async def typing(self, target: Target) -> None:
        # Slack has no typing indicator for bot messages outside assistant threads.
        return None

    async def stream(self, target: Target, reply: ReplyStream) -> None:
        """Post the first words, update the message at most every ``stream_interval`` seconds,
        then make it exactly the final reply (more messages if it does not fit in one)."""
        written = ""
        shown = ""
        ts: str | None = None
        last = 0.0
        async for delta in reply:
            written += delta
            if not written.strip() or written == shown:
                continue
            now = time.monotonic()
            if ts is None:
                ts = await self._post(target, preview(written))
            elif now - last >= self.config.stream_interval:
                await self._update(target, ts, preview(written))
            else:
                continue
            shown, last = written, now
        try:
            final = await reply.final()
        except Exception:
            # The turn failed mid-answer: say so where the partial answer is showing.
            if ts is not None:
                with contextlib.suppress(ChannelError):
                    await self._update(target, ts, preview(written + " … (interrupted)"))
            raise
        messages = render(final)
        if ts is None:
            for message in messages:
                await self._post(target, message)
            return
        await self._update(target, ts, messages[0])
        for message in messages[1:]:
            await self._post(target, message)

    async def send_ephemeral(
        self,
        channel: str,
        user: str,
        reply: Reply,
        response_url: str | None = None,
        replace: bool = False,
    ) -> None:
        """Only ``user`` sees it: through the command's response_url when there is one."""
        for index, message in enumerate(render(reply)):
            try:
                if response_url:
                    webhook = AsyncWebhookClient(response_url, session=self._session)
                    response = await webhook.send(
                        text=message.text,
                        blocks=message.blocks,
                        response_type="ephemeral",
                        replace_original=replace and index == 0,
                    )
                    if response.status_code != 200:
                        raise ChannelError(
                            f"response_url refused the reply ({response.status_code}: "
                            f"{response.body})"
                        )
                else:
                    await self.client.chat_postEphemeral(
                        channel=channel, user=user, text=message.text, blocks=message.blocks
                    )
            except SlackClientError as exc:
                raise ChannelError(f"Slack refused an ephemeral reply: {exc}") from exc

    async def _post(self, target: Target, message: SlackMessage) -> str:
        try:
            response = await self.client.chat_postMessage(
                channel=target.chat_key,
                thread_ts=target.thread or None,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
            )
        except SlackApiError as exc:
            if exc.response.status_code == 429 or exc.response.get("error") == "ratelimited":
                # Still limited after the client's own retries: the outbox sends it later.
                wait = float(exc.response.headers.get("Retry-After", 1) or 1)
                raise RetryLater(f"Slack rate-limited chat.postMessage: {exc}", wait) from exc
            raise ChannelError(f"Slack refused chat.postMessage: {exc}") from exc
        except SlackClientError as exc:
            raise ChannelError(f"Slack refused chat.postMessage: {exc}") from exc
        if target.thread and not is_dm(target.chat_key):
            self._joined(target.chat_key, target.thread)
        return str(response.get("ts", ""))

    async def _update(self, target: Target, ts: str, message: SlackMessage) -> None:
        try:
            await self.client.chat_update(
                channel=target.chat_key, ts=ts, text=message.text, blocks=message.blocks
            )
        except SlackClientError as exc:
            raise ChannelError(f"Slack refused chat.update: {exc}") from exc


def _clip_name(info: dict[str, Any], ref: dict[str, Any], mime: str | None) -> str:
    """The file's name, with an extension the transcription API accepts (Slack's own clips
    are named without one)."""
    name = str(info.get("name") or ref.get("name") or "")
    kind = audio_format(mime, name) or str(info.get("filetype") or "").lower()
    if kind not in SUPPORTED_FORMATS:
        kind = str(info.get("filetype") or "").lower()
    if kind not in SUPPORTED_FORMATS:
        kind = "webm"  # what Slack records its clips as
    if not name:
        return f"audio.{kind}"
    if audio_format(None, name) in SUPPORTED_FORMATS and "." in name:
        return name
    return f"{name.rsplit('.', 1)[0] if '.' in name else name}.{kind}"


# -- request checks -------------------------------------------------------------------------------


def signature_ok(
    secret: str, raw: bytes, timestamp: str, signature: str, now: float | None = None
) -> bool:
    """Slack's v0 scheme: ``v0=`` + hex HMAC-SHA256(secret, ``v0:{timestamp}:{raw body}``)."""
    if not secret or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_CLOCK_SKEW:
        return False
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256)
    return hmac.compare_digest("v0=" + digest.hexdigest(), signature)


def _error(status: int, detail: str) -> Response:
    return Response(
        status_code=status,
        content=json.dumps({"error": detail}),
        media_type="application/json",
    )


def _malformed(raw: bytes, content_type: str) -> str | None:
    """Why a signed body cannot be a Slack request, or ``None`` when it can."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    if content_type.startswith("application/json"):
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            return "body is not valid JSON"
        if not isinstance(body, dict) or "type" not in body:
            return "JSON body is not a Slack event"
        return None
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            form = parse_qs(text, strict_parsing=True, keep_blank_values=True)
        except ValueError:
            return "form body is malformed"
        if "payload" in form:
            try:
                payload = json.loads(form["payload"][0])
            except json.JSONDecodeError:
                return "interactivity payload is not valid JSON"
            if not isinstance(payload, dict) or "type" not in payload:
                return "interactivity payload is not a Slack action"
            return None
        if "command" not in form and "ssl_check" not in form:
            return "form body is neither a slash command nor an interactivity payload"
        return None
    return f"unsupported content type {content_type or 'none'!r}"
