"""A voice note uploaded as ``multipart/form-data``: read within its limits, or refused with a
clear status (413 too large, 415 not audio, 422 no file or a bad field), before the core sees it.

Starlette parses the form (python-multipart): the file part is spooled to disk past 1 MB, and
the route reads at most one byte past the limit of it, so an upload never costs more memory than
the limit. ``BodyLimitMiddleware`` has already refused a declared or streamed body far past it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile

from core.voice import MAX_UPLOAD_BYTES, audio_format

from .middleware import MULTIPART_OVERHEAD
from .models import CLIENT_ID_PATTERN

# The form fields the file may come in: ``audio``, or ``file`` as many upload widgets name it.
FILE_FIELDS = ("audio", "file")
# Containers of audio that say they are video (a browser's MediaRecorder may label them so).
VIDEO_AUDIO_TYPES = frozenset({"video/webm", "video/mp4"})
ACCEPTED_TYPES = "audio/* (webm, ogg, mp4/m4a, mpeg, wav, flac), video/webm or video/mp4"
MAX_MB = MAX_UPLOAD_BYTES // (1024 * 1024)
TOO_LARGE = f"the audio file is larger than {MAX_MB} MB"
# Small fields only; the file is the one part allowed to be large.
MAX_FIELD_BYTES = 1024
MAX_PARTS = 8
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)


@dataclass(frozen=True)
class VoiceUpload:
    data: bytes = field(repr=False)
    filename: str
    mime: str
    duration: float | None
    client_message_id: str | None


def _invalid(where: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's own shape (the one its schema documents), naming the field."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", where), "msg": message, "input": value}]
    )


def _declared_too_large(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (
        length is not None
        and length.isdigit()
        and int(length) > MAX_UPLOAD_BYTES + (MULTIPART_OVERHEAD)
    )


def _is_audio(mime: str) -> bool:
    base = mime.split(";")[0].strip().lower()
    return base.startswith("audio/") or base in VIDEO_AUDIO_TYPES


def _filename(given: str | None, mime: str) -> str:
    """The upload's own name, made safe, with the extension its type says (Groq reads the type
    from the name; a browser's Blob is named "blob")."""
    base = (given or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", base).strip("._")[:80] or "voice"
    kind = audio_format(mime, None)
    if kind and not name.lower().endswith(f".{kind}"):
        name = f"{name.rsplit('.', 1)[0] if '.' in name else name}.{kind}"
    return name


def _text_field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid(name, f"{name} must be a plain form field, not a file")
    return value


def _duration(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise _invalid("duration", "duration must be a number of seconds", raw[:40]) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _invalid("duration", "duration must be a number of seconds, 0 or more", raw[:40])
    return round(seconds, 2)


async def _read_limited(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, TOO_LARGE)
    return data


async def read_voice_upload(request: Request) -> VoiceUpload:
    """The voice note of a multipart request; HTTPException (413, 415, 400) or a 422 otherwise.
    Size first (from Content-Length, before parsing), then the file's presence, its type, the
    bytes read within the limit, and the small fields."""
    if _declared_too_large(request):
        raise HTTPException(413, TOO_LARGE)
    async with request.form(
        max_files=2, max_fields=MAX_PARTS, max_part_size=MAX_FIELD_BYTES
    ) as form:
        upload = next(
            (u for u in (form.get(f) for f in FILE_FIELDS) if isinstance(u, UploadFile)), None
        )
        if upload is None:
            raise _invalid(
                "audio",
                "no audio file: send it as the multipart/form-data file field 'audio' (or 'file')",
            )
        mime = (upload.content_type or "").strip()
        if not _is_audio(mime):
            raise HTTPException(
                415,
                f"the file's type is {mime[:60] or 'not given'}; accepted: {ACCEPTED_TYPES}",
            )
        if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
            raise HTTPException(413, TOO_LARGE)
        data = await _read_limited(upload)
        client_message_id = _text_field(form, "client_message_id")
        duration = _duration(_text_field(form, "duration"))
        filename = _filename(upload.filename, mime)
    if not data:
        raise _invalid("audio", "the audio file is empty")
    if client_message_id is not None and not _CLIENT_ID.match(client_message_id):
        raise _invalid(
            "client_message_id",
            f"client_message_id must match {CLIENT_ID_PATTERN}",
            client_message_id[:64],
        )
    return VoiceUpload(
        data, filename, mime.split(";")[0].strip().lower(), duration, client_message_id
    )
