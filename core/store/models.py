"""SQLAlchemy 2 typed models: users, conversations, messages, leads and the audit log."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from core.messages import utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite has no 64-bit autoincrement alias other than INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and Postgres."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            from datetime import UTC

            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class ConversationStatus:
    ACTIVE = "active"
    HANDOFF = "handoff"
    CLOSED = "closed"


class MessageStatus:
    RECEIVED = "received"  # inbound, stored, not yet answered
    ANSWERED = "answered"  # inbound, the turn completed
    IGNORED = "ignored"  # inbound that gets no reply (banned, paused, relayed)
    PENDING = "pending"  # outbound, persisted, not yet delivered
    SENT = "sent"  # outbound, delivered
    FAILED = "failed"  # outbound, the channel refused it
    # outbound, a process died while sending it: it may or may not have arrived, and is never
    # sent again (a customer must not get the same reply twice)
    UNKNOWN = "unknown"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_users_identity"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str | None] = mapped_column(String(256))
    phone: Mapped[str | None] = mapped_column(String(32))
    broadcast_opt_in: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    banned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # At most one open conversation per chat address; closed ones are history.
        Index(
            "uq_conversations_open_key",
            "channel",
            "chat_key",
            "thread",
            unique=True,
            sqlite_where=text("status != 'closed'"),
            postgresql_where=text("status != 'closed'"),
        ),
        Index("ix_conversations_status_activity", "status", "last_activity_at"),
        Index("ix_conversations_chat", "channel", "chat_key", "thread"),
        # The dashboard's period queries.
        Index("ix_conversations_started", "started_at", "channel"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    chat_key: Mapped[str] = mapped_column(String(128))
    thread: Mapped[str] = mapped_column(String(128), default="", server_default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default=ConversationStatus.ACTIVE)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()
    close_reason: Mapped[str | None] = mapped_column(String(32))
    # The scripted agent's slots and stage; JSON so that agents can evolve without migrations.
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    summary: Mapped[str | None] = mapped_column(Text)
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    assigned_to: Mapped[str | None] = mapped_column(String(128))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "platform_event_id", name="uq_messages_event"),
        Index("ix_messages_conversation", "conversation_id", "id"),
        # The dashboard's period queries (messages a day, the LLM's turns).
        Index("ix_messages_created", "created_at", "channel", "direction"),
        Index(
            "ix_messages_edit_of",
            "conversation_id",
            "edit_of",
            sqlite_where=text("edit_of IS NOT NULL"),
            postgresql_where=text("edit_of IS NOT NULL"),
        ),
        # A chat's unanswered messages, oldest first: what every turn reads. (No index on
        # every message's status: each turn would write its pages several times over.)
        Index(
            "ix_messages_unanswered",
            "conversation_id",
            "id",
            sqlite_where=text("status = 'received'"),
            postgresql_where=text("status = 'received'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(8))  # in / out
    author: Mapped[str] = mapped_column(String(128))  # user:<id>, bot, human:<id>, system
    text: Mapped[str] = mapped_column(Text)
    platform_event_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column()
    reply_to_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Who sent an inbound message: permissions, bans and the audit log follow the message's
    # own sender, never the conversation's first user (in a group they differ).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # An edit of an earlier message (its platform id): edits past a few are not answered.
    edit_of: Mapped[str | None] = mapped_column(String(64))
    # Failed turns of an inbound message: given up (status failed) after a few.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The reply that answered an inbound message (one reply may answer several in a row).
    answer_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))


# A conversation in the order its customer saw it (each reply right after the message it
# answers): the history every turn reads walks this index back from the end, so its cost is
# the history's length, not the conversation's.
Index(
    "ix_messages_history",
    Message.conversation_id,
    func.coalesce(Message.reply_to_id, Message.id),
    Message.id,
)


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (Index("ix_leads_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    product: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    tenure_months: Mapped[int | None] = mapped_column(Integer)
    monthly_income: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    emi: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    eligible: Mapped[bool | None] = mapped_column(Boolean)
    name: Mapped[str | None] = mapped_column(String(256))
    phone: Mapped[str | None] = mapped_column(String(32))
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_at: Mapped[datetime | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="new")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(160))
    outcome: Mapped[str] = mapped_column(String(16))  # ok / refused / failed
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiSession(Base):
    """A web chat session: its id is the web channel's chat key, bound to the API key that
    created it (only a hash of the key is stored)."""

    __tablename__ = "api_sessions"
    __table_args__ = (Index("ix_api_sessions_key_hash", "key_hash"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()


class AdminSession(Base):
    """A login to the sales dashboard. The cookie carries only this id, signed; the row says
    whether it still holds (logout sets ``revoked_at``, so a replayed cookie is refused)."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Which admin key logged in: a hash, enough to revoke one key's sessions, useless to present.
    key_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class HandoffStatus:
    WAITING = "waiting"  # the lead card is out; no rep has claimed it yet
    CLAIMED = "claimed"  # a rep has the conversation; the bot is silent
    RELEASED = "released"  # the rep handed it back to the bot
    RETURNED = "returned"  # idle past the limit: handed back to the bot by the scheduler
    OPEN = (WAITING, CLAIMED)


class Handoff(Base):
    """One request for a human on one conversation. Its timers are columns, so a restart
    loses none of them: the scheduler compares them with the clock."""

    __tablename__ = "handoffs"
    __table_args__ = (
        # At most one open handoff per conversation; ended ones are history.
        Index(
            "uq_handoffs_open_conversation",
            "conversation_id",
            unique=True,
            sqlite_where=text("status IN ('waiting', 'claimed')"),
            postgresql_where=text("status IN ('waiting', 'claimed')"),
        ),
        Index("ix_handoffs_card", "card_channel", "card_ts"),
        Index("ix_handoffs_status_due", "status", "sla_due_at"),
        Index("ix_handoffs_requested", "requested_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(String(16))  # human / lead
    status: Mapped[str] = mapped_column(String(16), default=HandoffStatus.WAITING)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Where the lead card is: the sales channel and the card message's ts (its thread).
    card_channel: Mapped[str | None] = mapped_column(String(64))
    card_ts: Mapped[str | None] = mapped_column(String(32))
    assigned_to: Mapped[str | None] = mapped_column(String(64))
    assigned_name: Mapped[str | None] = mapped_column(String(256))
    claimed_at: Mapped[datetime | None] = mapped_column()
    sla_due_at: Mapped[datetime] = mapped_column()
    reminded_at: Mapped[datetime | None] = mapped_column()
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    ended_by: Mapped[str | None] = mapped_column(String(160))


class BotFlag(Base):
    """Bot-wide switches an admin sets (``paused``); a row present means the flag is on."""

    __tablename__ = "bot_flags"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(160))


class Broadcast(Base):
    """A message to every opted-in customer: drafted by a dry run, sent once on confirmation."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft / sending / sent
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    finished_at: Mapped[datetime | None] = mapped_column()


class VoiceClip(Base):
    """The audio of a voice note: a web upload until it is transcribed (the web has no platform
    to fetch it from again), or any voice note's audio when ``ESOTERIC_KEEP_AUDIO`` is set."""

    __tablename__ = "voice_clips"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    mime: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxStatus:
    PENDING = "pending"  # persisted, not yet tried (or waiting out a retry-after)
    SENDING = "sending"  # a process is sending it now
    SENT = "sent"
    FAILED = "failed"  # the platform refused it for good
    UNKNOWN = "unknown"  # the sending process died mid-send: never sent again


class OutboxItem(Base):
    """Everything the bot sends, whatever produced it (a turn's reply, a rep's relayed message,
    a handoff notice, a broadcast): persisted first, then sent once and marked. A conversation's
    items go out in id order; a process that dies mid-send leaves ``sending`` behind, which
    recovery marks ``unknown`` rather than risk sending twice."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status", "status", "id"),
        Index("ix_outbox_conversation", "conversation_id", "id"),
        # A chat's items still to send, read by every turn of that chat.
        Index(
            "ix_outbox_pending_chat",
            "channel",
            "chat_key",
            "thread",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    # The outbound message this item delivers (None for broadcasts, which are not conversation
    # messages).
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    broadcast_id: Mapped[int | None] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(16))  # reply, relay, notice, broadcast
    channel: Mapped[str] = mapped_column(String(32))
    chat_key: Mapped[str] = mapped_column(String(128))
    thread: Mapped[str] = mapped_column(String(128), default="", server_default="")
    # The platform id of the message a reply answers (quoted in group chats).
    reply_to: Mapped[str | None] = mapped_column(String(64))
    # The reply as the channel renders it: text, choices, citations, contact request.
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A retry-after from the platform: not sent before this time.
    not_before: Mapped[datetime | None] = mapped_column()
    claimed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
