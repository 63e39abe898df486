"""The turn pipeline's own queries, as plain synchronous functions over one connection.

``TurnStore`` runs each as one transaction through ``Database.run_core`` (on SQLite right on the
event loop or on the database thread, on Postgres through the async engine). They run on every
message, so they are written as SQL that both databases speak (see ``_Statements``); the rest of
the store uses the ORM.

A turn answers the oldest unanswered inbound message(s) of one chat, whichever job or process
runs it: the job queue only guarantees that one turn per chat runs at a time, and reading "the
oldest unanswered" under that guarantee is what keeps replies in stored order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, text, update

from core.agent.base import HistoryItem, LeadDraft
from core.errors import ChatEnded
from core.i18n import LANGUAGE_KEYS
from core.messages import Inbound
from core.store.database import Database
from core.store.models import (
    ConversationStatus,
    Lead,
    MessageStatus,
    OutboxStatus,
    User,
)
from core.voice import VOICE_KINDS

# Postgres: committed turns are announced here, so a process waiting for a reply (an API call
# whose turn ran on another worker) hears of it at once.
TURNS_CHANNEL = "esoteric_turns"


@dataclass(frozen=True)
class ChatAddress:
    """A chat on a channel: the unit of ordering. Turns of one chat run one at a time, across
    its conversations (a /reset closes one and the next message opens another)."""

    channel: str
    chat_key: str
    thread: str = ""

    @property
    def lock(self) -> str:
        """The job queue's lock for this chat: a digest, since a web chat's key is a secret
        and the queue's rows and logs are not the place for it."""
        address = f"{self.channel}\0{self.chat_key}\0{self.thread}".encode()
        return "chat:" + hashlib.sha256(address).hexdigest()[:32]


@dataclass(frozen=True)
class Recorded:
    message_id: int
    conversation_id: int
    welcome_back: bool
    chat: ChatAddress
    # The chat's turn read in the same transaction, when the caller asked for it.
    loaded: Loaded | None = None
    # Stored but not to be answered (an edit past the limit): no turn is queued for it.
    ignored: bool = False


@dataclass(frozen=True)
class TurnData:
    """Everything a turn needs, read in one go under the chat's turn. ``message_ids`` are the
    inbound messages it answers (oldest first); the message fields describe the last of them,
    and ``text`` is all of theirs."""

    message_ids: tuple[int, ...]
    message_status: str
    text: str
    meta: dict[str, Any]
    conversation_id: int
    channel: str
    chat_key: str
    thread: str
    conversation_status: str
    paused: bool
    state: dict[str, Any]
    summary: str | None
    # The message's own sender (not the conversation's first user: in a group they differ).
    user_id: int | None
    user_banned: bool
    user_name: str | None
    user_phone: str | None
    history: tuple[HistoryItem, ...]
    # The sender's id on their channel (telegram:<this>), for admin checks and the audit log.
    user_external_id: str | None = None
    # An admin paused the whole bot: store messages, answer none (bot_flags row "paused").
    bot_paused: bool = False
    # The platform's id of the message answered, which group replies quote.
    platform_message_id: str | None = None

    @property
    def message_id(self) -> int:
        return self.message_ids[-1]

    @property
    def chat(self) -> ChatAddress:
        return ChatAddress(self.channel, self.chat_key, self.thread)


@dataclass(frozen=True)
class OutboxRow:
    """One item to send: where, what, and the outbound message it delivers (if any)."""

    id: int
    conversation_id: int | None
    message_id: int | None
    channel: str
    chat_key: str
    thread: str
    reply_to: str | None
    payload: dict[str, Any]
    status: str
    not_before: datetime | None
    attempts: int = 0


@dataclass(frozen=True)
class Answer:
    """What a finished turn writes: the reply (or nothing) and the conversation's new state."""

    text: str | None
    state: dict[str, Any]
    meta: dict[str, Any]
    summary: str | None = None
    lead: LeadDraft | None = None
    close_reason: str | None = None
    # How the channel renders the reply (text, choices, citations, contact request).
    payload: dict[str, Any] = field(default_factory=dict)
    posts: tuple[Post, ...] = ()


@dataclass(frozen=True)
class Post:
    """Something a turn sends somewhere other than the customer's chat (a customer's message
    relayed to the sales desk's thread): stored with the turn, so a turn run again never sends
    it twice."""

    chat: ChatAddress
    text: str
    kind: str = "desk"


@dataclass(frozen=True)
class Persisted:
    reply_id: int | None
    outbox_id: int | None
    # Sent by the turn now ("sending"), or left for the chat's flush behind earlier items.
    sending: bool
    # The outbox items of the turn's posts, to send after it (pending).
    posts: tuple[int, ...] = ()
    # Delivered by being stored (stored "sent"): the turn shows it, and marks nothing after.
    delivered: bool = False


# One statement whether the user is new or known; safe when two processes race.
_UPSERT_USER_SQL = (
    "INSERT INTO users (channel, external_id, display_name, phone, created_at, last_seen_at,"
    " broadcast_opt_in, banned)"
    " VALUES (:channel, :external_id, :display_name, :phone, :now, :now, false, false)"
    " ON CONFLICT (channel, external_id) DO UPDATE SET last_seen_at = excluded.last_seen_at,"
    " display_name = COALESCE(excluded.display_name, users.display_name),"
    " phone = COALESCE(excluded.phone, users.phone)"
    " RETURNING id"
)


class _Statements:
    """Runs the hot path's SQL, one text for both databases (``:name`` parameters).

    On SQLite it goes straight to the stdlib driver inside the transaction SQLAlchemy began:
    these few statements run on every message, and SQLAlchemy's per-statement work cost ten
    times SQLite's own. Values are stored exactly as the SQLAlchemy types store them (UTC
    timestamps as ISO text, JSON as text), so the ORM reads these rows unchanged."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        self.raw: Any = (
            self.conn.connection.driver_connection if self.conn.dialect.name == "sqlite" else None
        )

    def run(self, sql: str, params: dict[str, Any]) -> Any:
        if self.raw is not None:
            return self.raw.execute(sql, {k: _to_sqlite(v) for k, v in params.items()})
        return self.conn.execute(text(sql), {k: _to_postgres(v) for k, v in params.items()})

    def one(self, sql: str, params: dict[str, Any]) -> Any:
        return self.run(sql, params).fetchone()

    def all(self, sql: str, params: dict[str, Any]) -> list[Any]:
        return list(self.run(sql, params).fetchall())

    def changed(self, sql: str, params: dict[str, Any]) -> int:
        return int(self.run(sql, params).rowcount or 0)

    def notify(self, message_ids: Sequence[int], awaited: bool = True) -> None:
        """Tell waiting processes these messages' turns ended (Postgres; only for messages a
        caller waits on: a NOTIFY takes a lock every committing notifier shares). Delivered at
        commit, and only then: a waiter never hears of a turn that rolled back."""
        if self.postgres and message_ids and awaited:
            self.run(
                "SELECT pg_notify(:channel, :payload)",
                {"channel": TURNS_CHANNEL, "payload": ",".join(map(str, message_ids))},
            )


_PLAIN = frozenset({int, str, float, bool, type(None)})


def _to_sqlite(value: Any) -> Any:
    if type(value) in _PLAIN:  # most parameters: passed as they are, checked first
        return value
    if isinstance(value, datetime):
        return _sqlite_time(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


# The time last formatted, with its text: a transaction passes one ``now`` to most of its
# statements. One tuple, replaced whole, so the event loop's and the database thread's calls
# never see a time with another's text.
_last_time: tuple[datetime | None, str] = (None, "")


def _sqlite_time(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME format ("%Y-%m-%d %H:%M:%S.%f"); every stored time is UTC."""
    global _last_time
    last = _last_time
    if last[0] is value:
        return last[1]
    utc = value.astimezone(UTC)
    if utc.year < 1000:  # strftime's %Y does not pad these
        text = utc.strftime("%Y-%m-%d %H:%M:%S.%f")
    else:
        # % formatting: half strftime's time, and faster than an f-string with the same widths.
        text = "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
            utc.year,
            utc.month,
            utc.day,
            utc.hour,
            utc.minute,
            utc.second,
            utc.microsecond,
        )
    _last_time = (value, text)
    return text


def _to_postgres(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def _when(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _maybe_when(value: Any) -> datetime | None:
    return None if value is None else _when(value)


def json_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def _in(name: str, values: Sequence[int]) -> tuple[str, dict[str, Any]]:
    """An IN list with one parameter per value, which both drivers bind the same way."""
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{k}" for k in params) + ")", params


# -- storing an inbound message -----------------------------------------------------------------


def record_inbound(
    conn: Connection,
    inbound: Inbound,
    now: datetime,
    idle_after: timedelta,
    prefetch: int | None = None,
    max_edits: int | None = None,
    max_batch: int = 1,
) -> Recorded | None:
    """Store an inbound message with its user and conversation; ``None`` for a duplicate.
    An edit of a message already edited ``max_edits`` times is stored as ignored (a script
    editing one message in a loop must not queue a turn per edit).
    With ``prefetch`` (a history length), also read the chat's turn in the same transaction:
    for a caller that knows no turn of the chat can run before the one it queues next (one
    process, the chat's queue idle), which saves that turn a transaction."""
    q = _Statements(conn)
    if inbound.event_id is not None and q.one(
        "SELECT id FROM messages WHERE channel = :channel AND platform_event_id = :event_id",
        {"channel": inbound.channel, "event_id": inbound.event_id},
    ):
        return None
    user_id = q.one(
        _UPSERT_USER_SQL,
        {
            "channel": inbound.channel,
            "external_id": inbound.sender_id,
            "display_name": inbound.sender_name,
            "phone": inbound.contact_phone,
            "now": now,
        },
    )[0]
    key = {"channel": inbound.channel, "chat_key": inbound.chat_key, "thread": inbound.thread}
    row = q.one(
        "SELECT id, status, last_activity_at FROM conversations WHERE channel = :channel"
        " AND chat_key = :chat_key AND thread = :thread AND status != 'closed'",
        key,
    )
    welcome_back = False
    conversation_id: int | None = None
    if row is not None:
        conversation_id = row[0]
        if row[1] == ConversationStatus.ACTIVE and now - _when(row[2]) > idle_after:
            # Idle past the limit but not yet swept by the cleanup job: close it the same way.
            q.run(
                "UPDATE conversations SET status = 'closed', closed_at = :now,"
                " close_reason = 'idle' WHERE id = :cid",
                {"now": now, "cid": row[0]},
            )
            conversation_id, welcome_back = None, True
        else:
            # Also takes the conversation's row lock (Postgres) until commit, so two messages
            # of one chat stored at once get their ids in commit order.
            q.run(
                "UPDATE conversations SET last_activity_at = :now WHERE id = :cid",
                {"now": now, "cid": row[0]},
            )
    if conversation_id is None:
        # The chat's previous conversation, if any: just closed as idle, or the latest one.
        previous: int | None = row[0] if welcome_back and row is not None else None
        if not welcome_back:
            last = q.one(
                "SELECT close_reason, id FROM conversations WHERE channel = :channel"
                " AND chat_key = :chat_key AND thread = :thread ORDER BY id DESC LIMIT 1",
                key,
            )
            if last is not None and last[0] == "ended":
                # Rolls the transaction back: nothing of it is stored.
                raise ChatEnded(f"the {inbound.channel} chat was ended")
            welcome_back = last is not None and last[0] == "idle"
            previous = last[1] if last is not None else None
        conversation_id = q.one(
            "INSERT INTO conversations (channel, chat_key, thread, user_id, status, started_at,"
            " last_activity_at, state, paused) VALUES (:channel, :chat_key, :thread, :user_id,"
            " 'active', :now, :now, :state, false) RETURNING id",
            {**key, "user_id": user_id, "now": now, "state": _carried_over(q, previous)},
        )[0]
    meta: dict[str, Any] = {}
    voice = None
    if inbound.command is not None:
        meta["command"] = inbound.command.name
    if inbound.attachments:
        meta["attachments"] = [a.kind for a in inbound.attachments]
        voice = next((a for a in inbound.attachments if a.kind in VOICE_KINDS), None)
        if voice is not None:
            meta["audio"] = voice.audio_ref()
            if voice.data is not None:
                meta["audio"]["stored"] = True  # in voice_clips, not on a platform
    if inbound.contact_phone:
        meta["contact_shared"] = True
    if inbound.extra:
        meta["extra"] = dict(inbound.extra)
    if inbound.awaited:
        meta["awaited"] = True
    if inbound.group:
        meta["group"] = True
    status = MessageStatus.RECEIVED
    if inbound.edit_of is not None and max_edits is not None:
        edits = q.one(
            "SELECT count(*) FROM messages WHERE conversation_id = :cid AND edit_of = :edit_of",
            {"cid": conversation_id, "edit_of": inbound.edit_of},
        )[0]
        if edits >= max_edits:
            status = MessageStatus.IGNORED
            meta["ignored"] = "edits"
    if welcome_back:
        meta["welcome_back"] = True
    message_id = q.one(
        "INSERT INTO messages (conversation_id, channel, direction, author, user_id, text,"
        " platform_event_id, status, created_at, meta, edit_of) VALUES (:cid, :channel, 'in',"
        " :author, :user_id, :text, :event_id, :status, :now, :meta, :edit_of) RETURNING id",
        {
            "cid": conversation_id,
            "channel": inbound.channel,
            "author": f"user:{user_id}",
            "user_id": user_id,
            "text": inbound.text,
            "event_id": inbound.event_id,
            "status": status,
            "now": now,
            "meta": meta,
            "edit_of": inbound.edit_of,
        },
    )[0]
    if voice is not None and voice.data is not None:
        # The web's upload: kept with the message until it is transcribed.
        q.one(
            "INSERT INTO voice_clips (message_id, filename, mime, data, created_at) VALUES"
            " (:mid, :filename, :mime, :data, :now) RETURNING id",
            {
                "mid": message_id,
                "filename": voice.name or f"voice-{message_id}",
                "mime": voice.mime,
                "data": voice.data,
                "now": now,
            },
        )
    chat = ChatAddress(inbound.channel, inbound.chat_key, inbound.thread)
    ignored = status != MessageStatus.RECEIVED
    loaded = (
        load_turn(conn, chat, prefetch, max_batch) if prefetch is not None and not ignored else None
    )
    return Recorded(message_id, conversation_id, welcome_back, chat, loaded, ignored)


def _carried_over(q: _Statements, previous: int | None) -> dict[str, Any]:
    """What a new conversation keeps of the chat's previous one: the customer's language."""
    if previous is None:
        return {}
    found = q.one("SELECT state FROM conversations WHERE id = :cid", {"cid": previous})
    state = json_dict(found[0]) if found is not None else {}
    return {k: state[k] for k in LANGUAGE_KEYS if k in state}


def chat_of(conn: Connection, message_id: int | None, outbox_id: int | None) -> ChatAddress | None:
    """The chat a job is about, from its message or outbox item (jobs carry only ids)."""
    q = _Statements(conn)
    if message_id is not None:
        row = q.one(
            "SELECT c.channel, c.chat_key, c.thread FROM messages m"
            " JOIN conversations c ON c.id = m.conversation_id WHERE m.id = :id",
            {"id": message_id},
        )
    else:
        row = q.one(
            "SELECT channel, chat_key, thread FROM outbox WHERE id = :id", {"id": outbox_id}
        )
    return None if row is None else ChatAddress(row[0], row[1], row[2])


def find_event(conn: Connection, channel: str, event_id: str) -> Recorded | None:
    """The message stored for a platform event (a redelivery's original), if any."""
    row = _Statements(conn).one(
        "SELECT m.id, m.conversation_id, c.channel, c.chat_key, c.thread FROM messages m"
        " JOIN conversations c ON c.id = m.conversation_id"
        " WHERE m.channel = :channel AND m.platform_event_id = :event_id",
        {"channel": channel, "event_id": event_id},
    )
    if row is None:
        return None
    return Recorded(row[0], row[1], False, ChatAddress(row[2], row[3], row[4]))


# -- loading a turn -----------------------------------------------------------------------------


# The chat's oldest unanswered messages, each with its conversation and its sender: one
# statement for everything a turn reads but the history. It starts from the chat's
# conversations, then their unanswered messages by the partial index. Both databases otherwise
# start from every unanswered message of every chat, a cost that grows with a burst's backlog
# (SQLite, 1,000 waiting: 45 us a turn instead of 16; Postgres, 20,000: 45 ms instead of 0.1,
# walking the primary key for ORDER BY m.id). SQLite's CROSS JOIN keeps that order; ordering by
# conversation, then message, lets Postgres read the index in order. For one chat it is the
# same order: a chat's next conversation opens only after the last closed.
_BATCH_SQL = (
    "SELECT m.id, m.status, m.text, m.meta, m.conversation_id, COALESCE(m.user_id, c.user_id),"
    " c.status, c.paused, c.state, c.summary, u.banned, u.display_name, u.phone, u.external_id,"
    " (SELECT key FROM bot_flags WHERE key = 'paused'), m.attempts"
    " FROM conversations c CROSS JOIN messages m"
    " LEFT JOIN users u ON u.id = COALESCE(m.user_id, c.user_id)"
    " WHERE m.conversation_id = c.id AND m.status = 'received' AND m.direction = 'in'"
    " AND c.channel = :channel AND c.chat_key = :chat_key AND c.thread = :thread"
    " ORDER BY m.conversation_id, m.id LIMIT :limit"
)

# The conversation as the customer saw it: each reply right after the message it answers, even
# when later messages were stored before it (a burst queues them before any reply exists).
# Messages still waiting their turn are not part of it yet. Read from the end of
# ix_messages_history, whose expression is this ORDER BY's.
_HISTORY_SQL = (
    "SELECT direction, author, text FROM messages WHERE conversation_id = :cid"
    " AND status != 'received' ORDER BY COALESCE(reply_to_id, id) DESC, id DESC LIMIT :limit"
)

_PENDING_SQL = (
    "SELECT id, conversation_id, message_id, channel, chat_key, thread, reply_to, payload,"
    " status, not_before, attempts FROM outbox WHERE status = 'pending' AND channel = :channel"
    " AND chat_key = :chat_key AND thread = :thread ORDER BY id"
)


def _outbox_row(row: Any) -> OutboxRow:
    return OutboxRow(
        id=row[0],
        conversation_id=row[1],
        message_id=row[2],
        channel=row[3],
        chat_key=row[4],
        thread=row[5],
        reply_to=row[6],
        payload=json_dict(row[7]),
        status=row[8],
        not_before=_maybe_when(row[9]),
        attempts=int(row[10] or 0),
    )


def pending_for_chat(conn: Connection, chat: ChatAddress) -> list[OutboxRow]:
    q = _Statements(conn)
    key = {"channel": chat.channel, "chat_key": chat.chat_key, "thread": chat.thread}
    return [_outbox_row(r) for r in q.all(_PENDING_SQL, key)]


Loaded = tuple[ChatAddress | None, TurnData | None, list[OutboxRow]]


def _alone(row: Any) -> bool:
    """A message never merged with its neighbours into one turn. One whose turn failed before
    is retried alone, so a message that breaks its turn never takes the next ones down too."""
    text_, meta = str(row[2]), json_dict(row[3])
    return (
        bool(row[15])
        or text_.lstrip().startswith("/")
        or not text_.strip()
        or bool(meta.get("contact_shared"))
        or bool((meta.get("extra") or {}).get("callback"))
    )


def load_turn(
    conn: Connection,
    chat: ChatAddress | None,
    history_limit: int,
    max_batch: int = 1,
    message_id: int | None = None,
    outbox_id: int | None = None,
) -> Loaded:
    """The chat's oldest unanswered message(s) (consecutive ones of one conversation and one
    sender, up to ``max_batch``) with everything the turn needs, and the chat's outbox items
    still to send. Read at the start of the turn, under the chat's turn lock, so nothing in it
    is stale. A job that carries only ids (``message_id``, ``outbox_id``) finds its chat here,
    in the same transaction; ``None`` for a chat whose conversation is gone."""
    chat = chat or chat_of(conn, message_id, outbox_id)
    if chat is None:
        return None, None, []
    q = _Statements(conn)
    key = {"channel": chat.channel, "chat_key": chat.chat_key, "thread": chat.thread}
    pending = [_outbox_row(r) for r in q.all(_PENDING_SQL, key)]
    rows = q.all(_BATCH_SQL, {**key, "limit": max_batch})
    if not rows:
        return chat, None, pending
    # One turn answers one conversation's messages, and one sender's: a group's next speaker
    # gets a turn of their own (their name, their permissions). Commands, button presses,
    # shared contacts and attachments are answered on their own.
    first_conversation, first_user = rows[0][4], rows[0][5]
    batch = [rows[0]]
    if not _alone(rows[0]):
        for row in rows[1:]:
            if row[4] != first_conversation or row[5] != first_user or _alone(row):
                break
            batch.append(row)
    last = batch[-1]
    earlier = (
        q.all(_HISTORY_SQL, {"cid": first_conversation, "limit": history_limit})
        if history_limit > 0
        else []
    )
    history = tuple(
        HistoryItem("user" if d == "in" else "human" if a.startswith("human:") else "assistant", t)
        for d, a, t in reversed(earlier)
    )
    meta = json_dict(last[3])
    metas = [json_dict(r[3]) for r in batch]
    for flag in ("welcome_back", "awaited"):
        if any(m.get(flag) for m in metas):
            meta[flag] = True
    extra = meta.get("extra") or {}
    return (
        chat,
        TurnData(
            message_ids=tuple(r[0] for r in batch),
            message_status=last[1],
            text="\n".join(r[2] for r in batch),
            meta=meta,
            conversation_id=first_conversation,
            channel=chat.channel,
            chat_key=chat.chat_key,
            thread=chat.thread,
            conversation_status=last[6],
            paused=bool(last[7]),
            state=json_dict(last[8]),
            summary=last[9],
            user_id=first_user,
            user_banned=bool(last[10]),
            user_name=last[11],
            user_phone=last[12],
            history=history,
            user_external_id=last[13],
            bot_paused=last[14] is not None,
            platform_message_id=str(extra["message_id"]) if "message_id" in extra else None,
        ),
        pending,
    )


# -- finishing a turn ---------------------------------------------------------------------------


def persist_turn(
    conn: Connection,
    turn: TurnData,
    answer: Answer,
    now: datetime,
    send_now: bool,
    delivered: bool = False,
) -> Persisted | None:
    """Store the reply with its outbox item, and the turn's posts, and mark the turn's
    messages answered by it, in one transaction. ``None`` when the turn stores nothing to send.
    With ``delivered`` (and ``send_now``), the reply is stored as sent: for a channel whose
    client reads replies from the store (the web API), storing it is delivering it.
    Raises ``TurnAlreadyAnswered`` (and writes nothing) when the messages were answered
    already: only a turn run twice, which the chat's lock rules out, could see that, and its
    reply must never go out."""
    q = _Statements(conn)
    ids_sql, ids = _in("m", turn.message_ids)
    awaited = bool(turn.meta.get("awaited"))
    posts = tuple(
        _insert_outbox(
            q,
            conversation_id=turn.conversation_id,
            message_id=None,
            kind=post.kind,
            chat=post.chat,
            reply_to=None,
            payload={"text": post.text},
            now=now,
            sending=False,
        )
        for post in answer.posts
    )
    if answer.text is None:
        _claim(q, ids_sql, ids, turn, MessageStatus.IGNORED, None, now)
        q.notify(turn.message_ids, awaited)
        return Persisted(None, None, False, posts) if posts else None
    delivered = delivered and send_now
    meta = dict(answer.meta)
    if answer.lead is not None:
        meta["lead_id"] = _insert_lead(q.conn, turn, answer.lead, now)
    if len(turn.message_ids) > 1:
        meta["answers"] = list(turn.message_ids)
    reply_id = int(
        q.one(
            "INSERT INTO messages (conversation_id, channel, direction, author, text, status,"
            " created_at, reply_to_id, meta) VALUES (:cid, :channel, 'out', 'bot', :text,"
            " :status, :now, :reply_to, :meta) RETURNING id",
            {
                "cid": turn.conversation_id,
                "channel": turn.channel,
                "text": answer.text,
                "status": OutboxStatus.SENT if delivered else "pending",
                "now": now,
                "reply_to": turn.message_id,
                "meta": meta,
            },
        )[0]
    )
    _claim(q, ids_sql, ids, turn, MessageStatus.ANSWERED, reply_id, now)
    q.run(
        "UPDATE conversations SET state = :state, last_activity_at = :now,"
        " summary = COALESCE(:summary, summary),"
        " status = COALESCE(:close_status, status), closed_at = COALESCE(:closed_at, closed_at),"
        " close_reason = COALESCE(:close_reason, close_reason) WHERE id = :cid",
        {
            "state": answer.state,
            "now": now,
            "summary": answer.summary,
            "close_status": ConversationStatus.CLOSED if answer.close_reason else None,
            "closed_at": now if answer.close_reason else None,
            "close_reason": answer.close_reason,
            "cid": turn.conversation_id,
        },
    )
    outbox_id = _insert_outbox(
        q,
        conversation_id=turn.conversation_id,
        message_id=reply_id,
        kind="reply",
        chat=turn.chat,
        reply_to=turn.platform_message_id,
        payload=_flags(answer.payload),
        now=now,
        sending=send_now,
        delivered=delivered,
    )
    q.notify(turn.message_ids, awaited)
    return Persisted(reply_id, outbox_id, send_now, posts, delivered)


def _claim_sql(ids_sql: str) -> str:
    # The chat as well as the ids: with it the chat's unanswered index finds exactly the
    # turn's messages. Without it, a planner whose statistics predate a burst took that index
    # for the ids alone and filtered every chat's unanswered messages (Postgres, five messages
    # with 3,000 waiting: 1.1-2.6 ms an update against 0.2-0.3).
    return (
        "UPDATE messages SET status = :status, answered_at = :now, answer_id = :reply_id"
        f" WHERE conversation_id = :cid AND id IN {ids_sql} AND status = 'received'"
    )


def _claim(
    q: _Statements,
    ids_sql: str,
    ids: dict[str, Any],
    turn: TurnData,
    status: str,
    reply_id: int | None,
    now: datetime,
) -> None:
    claimed = q.changed(
        _claim_sql(ids_sql),
        {**ids, "cid": turn.conversation_id, "now": now, "status": status, "reply_id": reply_id},
    )
    if claimed != len(turn.message_ids):
        raise TurnAlreadyAnswered(turn.message_ids)


class TurnAlreadyAnswered(Exception):
    """The turn's messages were answered by another run of the same turn: its reply is
    dropped, never delivered."""

    def __init__(self, message_ids: Sequence[int]) -> None:
        super().__init__(f"messages {list(message_ids)} were answered already")
        self.message_ids = tuple(message_ids)


def _insert_lead(conn: Connection, turn: TurnData, lead: LeadDraft, now: datetime) -> int:
    lead_id = conn.execute(
        insert(Lead)
        .values(
            conversation_id=turn.conversation_id,
            user_id=turn.user_id,
            product=lead.product,
            amount=lead.amount,
            tenure_months=lead.tenure_months,
            monthly_income=lead.monthly_income,
            emi=lead.emi,
            eligible=lead.eligible,
            name=lead.name,
            phone=lead.phone,
            consent=lead.consent,
            consent_at=now if lead.consent else None,
            status="new",
            created_at=now,
        )
        .returning(Lead.id)
    ).scalar_one()
    if turn.user_id is not None and not turn.user_phone:
        conn.execute(update(User).where(User.id == turn.user_id).values(phone=lead.phone))
    return int(lead_id)


def _insert_outbox(
    q: _Statements,
    *,
    conversation_id: int | None,
    message_id: int | None,
    kind: str,
    chat: ChatAddress,
    reply_to: str | None,
    payload: dict[str, Any],
    now: datetime,
    sending: bool,
    broadcast_id: int | None = None,
    delivered: bool = False,
) -> int:
    if delivered:
        status = OutboxStatus.SENT
    else:
        status = OutboxStatus.SENDING if sending else OutboxStatus.PENDING
    return int(
        q.one(
            "INSERT INTO outbox (conversation_id, message_id, broadcast_id, kind, channel,"
            " chat_key, thread, reply_to, payload, status, attempts, claimed_at, created_at,"
            " sent_at) VALUES (:cid, :mid, :bid, :kind, :channel, :chat_key, :thread,"
            " :reply_to, :payload, :status, :attempts, :claimed_at, :now, :sent_at) RETURNING id",
            {
                "cid": conversation_id,
                "mid": message_id,
                "bid": broadcast_id,
                "kind": kind,
                "channel": chat.channel,
                "chat_key": chat.chat_key,
                "thread": chat.thread,
                "reply_to": reply_to,
                "payload": payload,
                "status": status,
                "claimed_at": now if sending else None,
                "now": now,
                "sent_at": now if delivered else None,
                "attempts": 1 if delivered else 0,
            },
        )[0]
    )


@dataclass(frozen=True)
class Outbound:
    """A message the bot or a rep sends outside a turn: a relayed rep message, a notice."""

    conversation_id: int
    author: str  # bot, or human:<rep id>
    text: str
    kind: str  # relay, notice
    meta: dict[str, Any] = field(default_factory=dict)
    # The platform event it came from (a rep's Slack message), deduplicated like inbound ones.
    event_id: str | None = None


def add_outbound(
    conn: Connection, outbound: Outbound, now: datetime
) -> tuple[int, int, ChatAddress] | None:
    """Store ``outbound`` with its outbox item, pending: the chat's flush sends it in order.
    ``None`` when the conversation is gone."""
    conversation_id = outbound.conversation_id
    q = _Statements(conn)
    conv = q.one(
        "SELECT channel, chat_key, thread FROM conversations WHERE id = :cid",
        {"cid": conversation_id},
    )
    if conv is None:
        return None
    chat = ChatAddress(conv[0], conv[1], conv[2])
    message_id = int(
        q.one(
            "INSERT INTO messages (conversation_id, channel, direction, author, text,"
            " platform_event_id, status, created_at, meta) VALUES (:cid, :channel, 'out',"
            " :author, :text, :event_id, 'pending', :now, :meta) RETURNING id",
            {
                "cid": conversation_id,
                "channel": chat.channel,
                "author": outbound.author,
                "text": outbound.text,
                "event_id": outbound.event_id,
                "now": now,
                "meta": outbound.meta,
            },
        )[0]
    )
    outbox_id = _insert_outbox(
        q,
        conversation_id=conversation_id,
        message_id=message_id,
        kind=outbound.kind,
        chat=chat,
        reply_to=None,
        payload={},
        now=now,
        sending=False,
    )
    return message_id, outbox_id, chat


def add_broadcast_items(
    conn: Connection,
    broadcast_id: int,
    recipients: Sequence[tuple[str, str, dict[str, Any]]],
    now: datetime,
) -> list[int]:
    """One pending outbox item per recipient (channel, chat key, the reply in their language)
    of a broadcast."""
    q = _Statements(conn)
    return [
        _insert_outbox(
            q,
            conversation_id=None,
            message_id=None,
            kind="broadcast",
            chat=ChatAddress(channel, chat_key),
            reply_to=None,
            payload=payload,
            now=now,
            sending=False,
            broadcast_id=broadcast_id,
        )
        for channel, chat_key, payload in recipients
    ]


def mark_ignored(conn: Connection, message_ids: Sequence[int], now: datetime) -> int:
    """Turn messages that get no reply (a banned sender, a paused bot) into ``ignored``."""
    q = _Statements(conn)
    ids_sql, ids = _in("m", message_ids)
    changed = q.changed(
        f"UPDATE messages SET status = 'ignored', answered_at = :now WHERE id IN {ids_sql}"
        " AND status = 'received'",
        {**ids, "now": now},
    )
    q.notify(message_ids)
    return changed


def record_failure(
    conn: Connection, message_ids: Sequence[int], now: datetime, max_attempts: int
) -> bool:
    """Count a failed turn against its messages; ``True`` when they are given up (``failed``)."""
    q = _Statements(conn)
    ids_sql, ids = _in("m", message_ids)
    q.run(f"UPDATE messages SET attempts = attempts + 1 WHERE id IN {ids_sql}", ids)
    gave_up = q.changed(
        f"UPDATE messages SET status = 'failed', answered_at = :now WHERE id IN {ids_sql}"
        " AND status = 'received' AND attempts >= :max",
        {**ids, "now": now, "max": max_attempts},
    )
    if gave_up:
        q.notify(message_ids)
    return gave_up > 0


# -- the outbox ---------------------------------------------------------------------------------


def claim_outbox(conn: Connection, outbox_id: int, now: datetime) -> OutboxRow | None:
    """Take a pending item for sending; ``None`` if another process took it (or it was sent)."""
    q = _Statements(conn)
    took = q.changed(
        "UPDATE outbox SET status = 'sending', claimed_at = :now WHERE id = :oid"
        " AND status = 'pending'",
        {"oid": outbox_id, "now": now},
    )
    if not took:
        return None
    row = q.one(
        "SELECT o.id, o.conversation_id, o.message_id, o.channel, o.chat_key, o.thread,"
        " o.reply_to, o.payload, o.status, o.not_before, o.attempts FROM outbox o"
        " WHERE o.id = :oid",
        {"oid": outbox_id},
    )
    item = _outbox_row(row)
    if item.message_id is not None:
        # A conversation message's text, choices and citations are the message's own; the
        # item keeps only how to render it.
        found = q.one("SELECT text, meta FROM messages WHERE id = :mid", {"mid": item.message_id})
        if found is not None:
            meta = json_dict(found[1])
            payload = {
                "text": found[0],
                "choices": meta.get("choices") or [],
                "citations": meta.get("citations") or [],
                **item.payload,
            }
            item = OutboxRow(**{**item.__dict__, "payload": payload})
    return item


def _flags(payload: dict[str, Any]) -> dict[str, Any]:
    """What an item stores of a conversation message's rendering: the rest is the message's."""
    return {k: v for k, v in payload.items() if k in ("request_contact", "remove_keyboard")}


def mark_outbox(
    conn: Connection,
    item_id: int,
    message_id: int | None,
    status: str,
    now: datetime,
    error: str | None = None,
    not_before: datetime | None = None,
) -> None:
    """Record how a send went: ``sent``, ``failed``, or ``pending`` again with ``not_before``
    (the platform's retry-after). The outbound message's status follows."""
    q = _Statements(conn)
    q.run(
        "UPDATE outbox SET status = :status, attempts = attempts + 1, error = :error,"
        " not_before = :not_before, sent_at = :sent_at WHERE id = :oid",
        {
            "status": status,
            "error": error,
            "not_before": not_before,
            "sent_at": now if status == OutboxStatus.SENT else None,
            "oid": item_id,
        },
    )
    if message_id is not None and status != OutboxStatus.PENDING:
        q.run(
            "UPDATE messages SET status = :status WHERE id = :mid",
            {"status": status, "mid": message_id},
        )


# -- recovery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """What recovery found: chats with unanswered messages (and the oldest message of each),
    chats with outbox items due, and broadcast items to send."""

    unanswered: list[tuple[ChatAddress, int]]
    chats_to_flush: list[tuple[ChatAddress, int]]
    loose_items: list[int]
    abandoned: int


# Every chat's unanswered messages, from the unanswered index; their age and order are
# sorted out by the caller. (With either in the SQL, SQLite walked the whole table instead: in
# id order, or every message older than the cutoff by the creation-time index.)
_BACKLOG_SQL = (
    "SELECT m.id, m.created_at, c.channel, c.chat_key, c.thread FROM messages m"
    " JOIN conversations c ON c.id = m.conversation_id"
    " WHERE m.status = 'received' AND m.direction = 'in'"
)


def find_backlog(conn: Connection, older_than: datetime, stale_before: datetime) -> Backlog:
    """Work a crash (or a lost job) left behind. Items a dead process was sending when it died
    (``sending`` since before ``stale_before``) become ``unknown``: they may have arrived, and a
    customer must not get the same message twice."""
    q = _Statements(conn)
    abandoned = q.changed(
        "UPDATE outbox SET status = 'unknown', error = 'the sending process stopped mid-send'"
        " WHERE status = 'sending' AND claimed_at < :stale",
        {"stale": stale_before},
    )
    if abandoned:
        q.run(
            "UPDATE messages SET status = 'unknown' WHERE direction = 'out' AND status = 'pending'"
            " AND id IN (SELECT message_id FROM outbox WHERE status = 'unknown')",
            {},
        )
    unanswered: dict[ChatAddress, int] = {}
    # SQLite hands back its stored text, whose order is the times' order.
    cutoff: Any = older_than if q.raw is None else _sqlite_time(older_than)
    old = sorted(row for row in q.all(_BACKLOG_SQL, {}) if row[1] < cutoff)
    for mid, _, channel, chat_key, thread in old:
        unanswered.setdefault(ChatAddress(channel, chat_key, thread), mid)
    flush: dict[ChatAddress, int] = {}
    loose: list[int] = []
    for oid, cid, channel, chat_key, thread in q.all(
        "SELECT id, conversation_id, channel, chat_key, thread FROM outbox"
        " WHERE status = 'pending' AND created_at < :cutoff"
        " AND (not_before IS NULL OR not_before <= :now) ORDER BY id",
        {"cutoff": older_than, "now": older_than},
    ):
        if cid is None:
            loose.append(oid)
        else:
            flush.setdefault(ChatAddress(channel, chat_key, thread), oid)
    return Backlog(list(unanswered.items()), list(flush.items()), loose, abandoned)


def outcome_rows(conn: Connection, message_ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """For waiters: each message's status and conversation, and the reply that answered it."""
    q = _Statements(conn)
    ids_sql, ids = _in("m", message_ids)
    return q.all(
        "SELECT m.id, m.status, m.conversation_id, r.id, r.text, r.meta FROM messages m"
        f" LEFT JOIN messages r ON r.id = m.answer_id WHERE m.id IN {ids_sql}",
        ids,
    )


class TurnStore:
    """The turn pipeline's SQL behind one interface, each call one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_inbound(
        self,
        inbound: Inbound,
        now: datetime,
        idle_after: timedelta,
        prefetch: int | None = None,
        max_edits: int | None = None,
        max_batch: int = 1,
    ) -> Recorded | None:
        # Committed without waiting for the disk: ``sync`` makes it durable before the message
        # is acknowledged, one sync for the messages that arrive together.
        return await self.db.run_core_relaxed(
            record_inbound, inbound, now, idle_after, prefetch, max_edits, max_batch
        )

    async def sync(self) -> None:
        await self.db.sync_log()

    async def find_event(self, channel: str, event_id: str) -> Recorded | None:
        return await self.db.run_core(find_event, channel, event_id)

    async def load_turn(
        self,
        chat: ChatAddress | None,
        history_limit: int,
        max_batch: int = 1,
        message_id: int | None = None,
        outbox_id: int | None = None,
    ) -> Loaded:
        return await self.db.run_core(
            load_turn, chat, history_limit, max_batch, message_id, outbox_id
        )

    async def pending_for_chat(self, chat: ChatAddress) -> list[OutboxRow]:
        return await self.db.run_core(pending_for_chat, chat)

    async def persist_turn(
        self,
        turn: TurnData,
        answer: Answer,
        now: datetime,
        send_now: bool,
        delivered: bool = False,
    ) -> Persisted | None:
        # Only a customer's message must be on disk before it is acknowledged; a reply lost to
        # a power cut leaves its message unanswered, and it is answered again after the restart
        # (the next durable commit, usually the next message stored, makes it durable anyway).
        return await self.db.run_core_relaxed(persist_turn, turn, answer, now, send_now, delivered)

    async def record_failure(
        self, message_ids: Sequence[int], now: datetime, max_attempts: int
    ) -> bool:
        return await self.db.run_core(record_failure, message_ids, now, max_attempts)

    async def mark_ignored(self, message_ids: Sequence[int], now: datetime) -> int:
        return await self.db.run_core(mark_ignored, message_ids, now)

    async def add_outbound(
        self, outbound: Outbound, now: datetime
    ) -> tuple[int, int, ChatAddress] | None:
        return await self.db.run_core(add_outbound, outbound, now)

    async def add_broadcast_items(
        self,
        broadcast_id: int,
        recipients: Sequence[tuple[str, str, dict[str, Any]]],
        now: datetime,
    ) -> list[int]:
        return await self.db.run_core(add_broadcast_items, broadcast_id, recipients, now)

    async def claim_outbox(self, item_id: int, now: datetime) -> OutboxRow | None:
        return await self.db.run_core(claim_outbox, item_id, now)

    async def mark_outbox(
        self,
        item_id: int,
        message_id: int | None,
        status: str,
        now: datetime,
        error: str | None = None,
        not_before: datetime | None = None,
    ) -> None:
        # A delivery's "sent" may be lost to a power cut: the item is then left "sending", which
        # recovery marks "unknown" and never sends again. Every other outcome must hold.
        run = self.db.run_core_relaxed if status == OutboxStatus.SENT else self.db.run_core
        await run(mark_outbox, item_id, message_id, status, now, error, not_before)

    async def find_backlog(self, older_than: datetime, stale_before: datetime) -> Backlog:
        return await self.db.run_core(find_backlog, older_than, stale_before)

    async def outcome_rows(self, message_ids: Sequence[int]) -> list[tuple[Any, ...]]:
        return await self.db.run_core(outcome_rows, message_ids)
