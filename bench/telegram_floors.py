"""The floors Esoteric's Telegram path is compared with, each run as its own process by
``bench/telegram.py`` (so its CPU and memory are its own):

- ``echo``: a bare python-telegram-bot 22 echo bot, as its examples write one (updates handled
  one at a time, the default);
- ``echo-llm``: the same bot making one call with the real ``groq`` SDK (``AsyncGroq`` as its
  README shows it) per update: it sends the customer's text and replies with the completion, as
  a minimal LLM bot does.

    python bench/telegram_floors.py echo|echo-llm BOT_TOKEN BOT_API_URL [GROQ_BASE_URL]

Prints ``ready`` once polling, and shuts down cleanly when its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on the path, where ``telegram.py`` would
# shadow the python-telegram-bot package: the project root takes its place.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)

from telegram import Update  # noqa: E402
from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters  # noqa: E402

MODEL = "llama-3.3-70b-versatile"


async def main(kind: str, token: str, api_url: str, groq_url: str | None) -> None:
    app = ApplicationBuilder().token(token).base_url(api_url).build()
    if kind == "echo":

        async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.effective_message
            if message is not None and message.text:
                await message.reply_text(message.text)

        app.add_handler(MessageHandler(filters.TEXT, echo))
    else:
        from groq import AsyncGroq

        client = AsyncGroq(api_key="gsk_bench_floor_key", base_url=groq_url)

        async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.effective_message
            if message is None or not message.text:
                return
            completion = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": message.text}]
            )
            await message.reply_text(completion.choices[0].message.content or "…")

        app.add_handler(MessageHandler(filters.TEXT, answer))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(timeout=10)
    print("ready", flush=True)
    try:
        await asyncio.to_thread(sys.stdin.read)
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


if __name__ == "__main__":
    kind, token, api_url = sys.argv[1:4]
    asyncio.run(main(kind, token, api_url, sys.argv[4] if len(sys.argv) > 4 else None))
