"""Voice notes: a customer's recording becomes the turn's text.

A channel stores a voice note as a message with no text and an audio reference in its meta
(``meta["audio"]``: the kind, the platform's file id, duration, size, type). The turn's
``VoiceNotes`` handler checks the limits, fetches the audio through the channel
(``AudioSource``), has it transcribed (``Transcriber``: Groq's Whisper through the groq SDK), and
stores the transcript on the message before anything answers it: a turn run again after a
crash reads the stored transcript and never transcribes twice. When it cannot be heard (no API
key, the API failing, a corrupt file) the customer gets a clear answer and the reference stays,
so ``/retry`` can transcribe it later.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

# What Groq's transcription API takes (its documentation's list of file types).
SUPPORTED_FORMATS = frozenset(
    {"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "opus", "wav", "webm"}
)
# The same, as the MIME types platforms give them.
_MIME_FORMATS = {
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "m4a",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/webm": "webm",
    "video/webm": "webm",
    "video/mp4": "mp4",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
}
# Groq's upload limit on the free tier; larger files are refused before any download.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
# Attachment kinds that are speech to transcribe.
VOICE_KINDS = frozenset({"voice", "audio", "video_note"})
# Whisper names the language it heard; the conversation speaks in codes.
_LANGUAGES = {"english": "en", "hindi": "hi", "en": "en", "hi": "hi"}
_DEVANAGARI = re.compile(r"[\u0900-\u097F]")


def audio_format(mime: str | None, name: str | None) -> str | None:
    """The file type of an audio file from its MIME type or its name, or ``None``."""
    if mime:
        base = mime.split(";")[0].strip().lower()
        if base in _MIME_FORMATS:
            return _MIME_FORMATS[base]
        if "/" in base and base.split("/")[1] in SUPPORTED_FORMATS:
            return base.split("/")[1]
    if name and "." in name:
        return name.rsplit(".", 1)[1].lower()
    if mime:
        return mime.split(";")[0].split("/")[-1].lower()
    return None


@dataclass(frozen=True)
class AudioClip:
    data: bytes
    filename: str
    mime: str | None = None


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None  # "en", "hi", or Whisper's own name for another language
    duration: float | None
    # Whisper's average log-probability over the segments (closer to 0 is surer), if given.
    avg_logprob: float | None = None
    no_speech_prob: float | None = None

    @property
    def uncertain(self) -> bool:
        return (self.avg_logprob is not None and self.avg_logprob < -0.8) or (
            self.no_speech_prob is not None and self.no_speech_prob > 0.5
        )

    def as_meta(self) -> dict[str, Any]:
        return {
            "transcript": self.text,
            "language": self.language,
            "duration": self.duration,
            "avg_logprob": self.avg_logprob,
            "no_speech_prob": self.no_speech_prob,
        }


class VoiceError(Exception):
    """Why a voice note could not be heard: ``reason`` is one of ``too_large``,
    ``unsupported``, ``unreadable`` (the file is not audio the API can read), ``unavailable``
    (the platform would not give the file) or ``failed`` (the API kept failing)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@runtime_checkable
class AudioSource(Protocol):
    """A channel that can fetch the audio of a voice note it stored (implemented by ports)."""

    # The largest file the platform lets a bot download (Telegram's Bot API: 20 MB).
    max_audio_bytes: int

    async def fetch_audio(self, ref: dict[str, Any]) -> AudioClip: ...


class Transcriber(Protocol):
    async def transcribe(self, clip: AudioClip, deadline: float) -> Transcript: ...


@dataclass
class GroqTranscriber:
    """Whisper through the groq SDK's audio API, retried with backoff within the deadline on
    rate limits, server errors and dropped connections; a file the API refuses is
    ``unreadable`` at once."""

    client: Any  # groq.AsyncGroq
    model: str = "whisper-large-v3-turbo"
    max_retries: int = 2
    backoff_seconds: float = 0.5
    clock: Callable[[], float] = time.monotonic
    requests: int = field(default=0, init=False)

    async def transcribe(self, clip: AudioClip, deadline: float) -> Transcript:
        import groq
        import httpx

        attempt = 0
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise VoiceError("failed", "no time left to transcribe the voice note")
            try:
                self.requests += 1
                async with asyncio.timeout(remaining):
                    response = await self.client.audio.transcriptions.create(
                        file=(clip.filename, clip.data, clip.mime or "application/octet-stream"),
                        model=self.model,
                        response_format="verbose_json",
                        temperature=0.0,
                    )
                return parse_transcription(_as_dict(response))
            except groq.BadRequestError as exc:
                raise VoiceError(
                    "unreadable", f"the transcription API refused the file: {exc}"
                ) from exc
            except (groq.APIStatusError, groq.APIConnectionError, httpx.TransportError) as exc:
                status = getattr(exc, "status_code", None)
                retryable = status is None or status in (408, 409, 429) or status >= 500
                wait = self.backoff_seconds * (2**attempt)
                if not retryable or attempt >= self.max_retries:
                    raise VoiceError("failed", f"transcription failed: {exc}") from exc
                if self.clock() + wait >= deadline:
                    raise VoiceError("failed", f"transcription failed in time: {exc}") from exc
                attempt += 1
                log.info("retrying the transcription in %.2fs (%s)", wait, status or "connection")
                await asyncio.sleep(wait)
            except TimeoutError as exc:
                raise VoiceError("failed", "the transcription timed out") from exc


def _as_dict(response: Any) -> dict[str, Any]:
    if isinstance(response, dict):
        return response
    to_dict = getattr(response, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    return {"text": str(getattr(response, "text", ""))}


def parse_transcription(body: dict[str, Any]) -> Transcript:
    """Whisper's verbose JSON: the text, the language it heard, the duration, and how sure it
    was (segments' average log-probability and no-speech probability)."""
    text = " ".join(str(body.get("text") or "").split())
    heard = str(body.get("language") or "").strip().lower() or None
    language = _LANGUAGES.get(heard, heard) if heard else None
    if language == "hi" and text and not _DEVANAGARI.search(text):
        language = "hinglish"  # Hindi speech written in Latin letters
    segments = [s for s in body.get("segments") or [] if isinstance(s, dict)]
    logprobs = [float(s["avg_logprob"]) for s in segments if s.get("avg_logprob") is not None]
    no_speech = [
        float(s["no_speech_prob"]) for s in segments if s.get("no_speech_prob") is not None
    ]
    duration = body.get("duration")
    return Transcript(
        text=text,
        language=language,
        duration=float(duration) if duration is not None else None,
        avg_logprob=sum(logprobs) / len(logprobs) if logprobs else None,
        no_speech_prob=max(no_speech) if no_speech else None,
    )
