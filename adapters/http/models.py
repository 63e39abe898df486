"""The API's request and response bodies. Validation failures become clear 422 answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.messages import MAX_TEXT_CHARS, Citation, Reply

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
CLIENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionCreated(BaseModel):
    session_id: str
    created_at: datetime


class CitationOut(BaseModel):
    source: str
    heading: str
    chunk_id: str = ""
    score: float | None = None


class ChoiceOut(BaseModel):
    label: str
    value: str


class HistoryMessageOut(BaseModel):
    id: int
    role: str = Field(description="user, assistant, or human (a loan advisor)")
    text: str
    created_at: datetime
    citations: list[CitationOut] = []
    choices: list[ChoiceOut] = []
    answers: list[int] = Field(
        default=[],
        description="for a reply: the ids of the messages it answers (several when the "
        "customer sent a few in a row)",
    )


class SessionOut(BaseModel):
    session_id: str
    status: str = Field(description="active, handoff, closed (idle or reset) or ended (deleted)")
    created_at: datetime
    last_activity_at: datetime | None
    ended_at: datetime | None
    messages: list[HistoryMessageOut]


class ChatIn(_Strict):
    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    message: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    client_message_id: str | None = Field(
        default=None,
        pattern=CLIENT_ID_PATTERN,
        description="Your id for this message: a retry with the same id is answered once.",
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message is empty")
        return value


class ChatOut(BaseModel):
    session_id: str
    reply: str | None = Field(description="null when a human advisor has taken over the chat")
    citations: list[CitationOut] = []
    choices: list[ChoiceOut] = []
    duplicate: bool = Field(False, description="true when this answers an earlier delivery")
    message_id: int | None = None


class VoiceOut(ChatOut):
    transcript: str | None = Field(
        description="what was heard of the voice note; null when it could not be heard (the "
        "reply then says so, and the note is kept)"
    )


class RagQueryIn(_Strict):
    query: str = Field(min_length=1, max_length=1000)
    top_k: int = Field(default=4, ge=1, le=20)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query is empty")
        return value


class RagResultOut(BaseModel):
    chunk_id: str
    source: str
    heading: str
    score: float
    text: str


class RagQueryOut(BaseModel):
    query: str
    results: list[RagResultOut]


class ErrorOut(BaseModel):
    detail: str


def citations_out(citations: tuple[Citation, ...] | list[dict[str, Any]]) -> list[CitationOut]:
    out = []
    for item in citations:
        data = item.as_dict() if isinstance(item, Citation) else item
        out.append(CitationOut.model_validate(data))
    return out


def reply_frame(reply: Reply) -> dict[str, Any]:
    """The WebSocket frame (and REST fields) for a whole reply."""
    return {
        "type": "reply",
        "reply": reply.text,
        "citations": [c.as_dict() for c in reply.citations],
        "choices": [{"label": c.label, "value": c.value} for c in reply.choices],
    }
