"""Real speech for the voice tests: espeak-ng (Debian's package) speaks a sentence in English or
Hindi into WAV, and ffmpeg encodes it the way platforms send it: OGG/Opus (Telegram voice
notes), M4A/AAC and WebM/Opus (Slack clips, browsers). Tests that need it skip, saying why, on
a machine without those tools (`.ci/run` installs them)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

_CACHE = Path(tempfile.gettempdir()) / "esoteric-test-audio"
# ffmpeg's arguments per container: the codec each platform uses.
_ENCODE = {
    "ogg": ["-c:a", "libopus", "-b:a", "24k"],
    "m4a": ["-c:a", "aac", "-b:a", "48k"],
    "webm": ["-c:a", "libopus", "-b:a", "24k"],
    "wav": [],
}
MIME = {"ogg": "audio/ogg", "m4a": "audio/mp4", "webm": "audio/webm", "wav": "audio/wav"}


@dataclass(frozen=True)
class Speech:
    data: bytes
    format: str
    duration: float
    path: Path

    @property
    def mime(self) -> str:
        return MIME[self.format]


def tools_missing() -> str | None:
    missing = [tool for tool in ("espeak-ng", "ffmpeg", "ffprobe") if shutil.which(tool) is None]
    return f"needs {', '.join(missing)} (apt-get install espeak-ng ffmpeg)" if missing else None


def speak(sentence: str, voice: str = "en", fmt: str = "ogg") -> Speech:
    """``sentence`` spoken by espeak-ng's ``voice`` (``en``, ``hi``), encoded as ``fmt``;
    cached by content so a test session synthesises each sentence once."""
    problem = tools_missing()
    if problem:
        pytest.skip(problem)
    _CACHE.mkdir(exist_ok=True)
    key = hashlib.sha256(f"{voice}|{fmt}|{sentence}".encode()).hexdigest()[:16]
    wav = _CACHE / f"{key}.wav"
    out = _CACHE / f"{key}.{fmt}"
    if not out.exists():
        # Made under names of this process's own, then renamed into place: test processes
        # running side by side (pytest-xdist) never read each other's half-written file.
        own = f".{os.getpid()}"
        wav = wav.with_name(wav.name + own + ".wav")
        made = out.with_name(f"{key}{own}.{fmt}")
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), sentence], check=True)
        if fmt != "wav":
            subprocess.run(
                ["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), *_ENCODE[fmt], str(made)],
                check=True,
            )
            wav.unlink()
        else:
            wav.rename(made)
        made.replace(out)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return Speech(out.read_bytes(), fmt, float(probe.stdout.strip()), out)
