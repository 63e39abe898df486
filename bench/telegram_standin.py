"""The stand-in Bot API the Telegram benchmarks drive, run in its own process so its CPU is not
charged to the bot measured. Control routes (not Telegram's) let the driver in another process
queue a closed-loop wave or an open-loop burst and read back what the bot sent."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

from tests.support.telegram_server import ApiCall, TelegramServer

ECHO_TOKEN = "7099999999:AAEchoBotTokenForLocalBenchOnly_xyz"
ECHO_ME = {"id": 7099999999, "is_bot": True, "first_name": "Echo", "username": "echo_bench_bot"}
REPLY_METHODS = ("sendMessage", "editMessageText")


class WaveServer(TelegramServer):
    """The stand-in plus control routes:

    - ``POST /_control/wave``: queue a wave of updates, answer when every chat in it has its
      replies (a reply = a ``sendMessage``), with each update's latency as the stand-in measured
      it (update queued -> the reply's first message received);
    - ``POST /_control/burst``: queue every update at once, answer when the bot has been quiet
      for a while, with the time of every reply;
    - ``GET /_control/calls/{token}``: calls per method so far; ``GET /_control/lags/{token}``:
      for streamed replies, the time from a reply's first message to each later edit of it;
    - ``POST /_control/reset/{token}``: forget updates a previous run left unconfirmed."""

    def __init__(self) -> None:
        super().__init__()
        self.add_bot(ECHO_TOKEN, ECHO_ME)
        self.replies: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.wave_done = asyncio.Event()
        self.waiting: dict[tuple[str, str], int] = {}
        self.last_send: dict[tuple[str, str], float] = {}
        self.edit_lags: dict[str, list[float]] = defaultdict(list)
        self.last_activity: dict[str, float] = {}
        self.on_call = self._track

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_post("/_control/wave", self._wave)
        app.router.add_post("/_control/burst", self._burst)
        app.router.add_get("/_control/calls/{token}", self._counts)
        app.router.add_get("/_control/lags/{token}", self._lags)
        app.router.add_post("/_control/reset/{token}", self._reset)

    def _track(self, call: ApiCall) -> None:
        if call.method != "getUpdates":
            self.last_activity[call.token] = call.at
        if call.status != 200 or call.method not in REPLY_METHODS:
            return
        key = (call.token, str(call.chat_id))
        if call.method == "editMessageText":
            sent = self.last_send.get(key)
            if sent is not None:
                self.edit_lags[call.token].append(call.at - sent)
            return
        self.last_send[key] = call.at
        self.replies[key].append(call.at)
        if key in self.waiting and len(self.replies[key]) >= self.waiting[key]:
            del self.waiting[key]
            if not self.waiting:
                self.wave_done.set()

    async def _counts(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        counts: dict[str, int] = defaultdict(int)
        for call in self.calls:
            if call.token == token:
                counts[call.method] += 1
        return web.json_response(counts)

    async def _lags(self, request: web.Request) -> web.Response:
        lags = self.edit_lags.pop(request.match_info["token"], [])
        return web.json_response({"lags": lags})

    async def _reset(self, request: web.Request) -> web.Response:
        bot = self.bots[request.match_info["token"]]
        bot.pending.clear()
        bot.webhook = None
        return web.json_response({"ok": True})

    async def _wave(self, request: web.Request) -> web.Response:
        body = await request.json()
        token, updates = body["token"], body["updates"]
        expected: dict[tuple[str, str], int] = defaultdict(int)
        for update in updates:
            expected[(token, str(update["message"]["chat"]["id"]))] += 1
        starts = {key: len(self.replies[key]) for key in expected}
        self.waiting = {key: starts[key] + n for key, n in expected.items()}
        self.wave_done.clear()
        pushed = time.perf_counter()
        for update in updates:
            await self.push(update, token)
        try:
            await asyncio.wait_for(self.wave_done.wait(), float(body.get("timeout", 60)))
        except TimeoutError:
            missing = sorted(chat for _, chat in self.waiting)
            return web.json_response({"error": f"chats without a reply in time: {missing}"})
        latencies = []
        for key, n in expected.items():
            latencies += [at - pushed for at in self.replies[key][starts[key] : starts[key] + n]]
        return web.json_response({"latencies": latencies, "done": time.perf_counter() - pushed})

    async def _burst(self, request: web.Request) -> web.Response:
        """Every update queued at once; done once each chat has a reply and the bot has made
        no call (other than polling) for ``quiet`` seconds."""
        body = await request.json()
        token, updates = body["token"], body["updates"]
        quiet, limit = float(body.get("quiet", 2.0)), float(body.get("timeout", 600))
        chats = {str(update["message"]["chat"]["id"]) for update in updates}
        starts = {chat: len(self.replies[(token, chat)]) for chat in chats}
        first_call = len(self.calls)
        pushed = time.perf_counter()
        for update in updates:
            await self.push(update, token)
        while True:
            await asyncio.sleep(0.1)
            now = time.perf_counter()
            answered = all(len(self.replies[(token, c)]) > starts[c] for c in chats)
            if answered and now - self.last_activity.get(token, pushed) >= quiet:
                break
            if now - pushed > limit:
                return web.json_response({"error": "the burst was not answered in time"})
        sends = sorted(at for chat in chats for at in self.replies[(token, chat)][starts[chat] :])
        counts: dict[str, int] = defaultdict(int)
        for call in self.calls[first_call:]:
            if call.token == token and call.method != "getUpdates":
                counts[call.method if call.status == 200 else f"{call.method} {call.status}"] += 1
        return web.json_response(
            {"pushed": pushed, "sends": [at - pushed for at in sends], "calls": counts}
        )


def run_stand_in(port_pipe: Any) -> None:
    """The stand-in's process: serve until terminated; the port goes back through the pipe."""

    async def main() -> None:
        server = WaveServer()
        await server.start()
        port_pipe.send(server.port)
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()

    asyncio.run(main())
