"""``esoteric chat`` as a user runs it: piped stdin, resumed sessions, bad settings, crashes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.catalogue import load_catalogue
from core.loan import emi
from core.money import format_money

ESOTERIC = [sys.executable, "-m", "bot"]


def run_chat(data_dir: Path, stdin: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_"))
    }
    environment.pop("DATABASE_URL", None)
    # These tests are about the conversation, not retrieval: no embedding model, no download.
    no_model = str(data_dir / "no-embedding-model")
    environment.update(
        {
            "ESOTERIC_DATA_DIR": str(data_dir),
            "USER": "asha",
            "ESOTERIC_EMBEDDING_MODEL_DIR": no_model,
            **env,
        }
    )
    return subprocess.run(
        [*ESOTERIC, "chat"],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def db_rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / "esoteric.db") as conn:
        return conn.execute(sql).fetchall()


def test_piped_loan_conversation_quotes_the_exact_emi(tmp_path: Path) -> None:
    result = run_chat(
        tmp_path,
        "hi\nI need a home loan\n25 lakh\n20 years\nmy salary is 1.2 lakh a month\n",
    )
    assert result.returncode == 0, result.stderr
    rate = load_catalogue().get("home").annual_rate
    assert f"EMI: {format_money(emi(2_500_000, rate, 240))} per month" in result.stdout
    assert "240 months" in result.stdout
    assert "eligible" in result.stdout.split("EMI:")[-1]
    # One reply per line of input, in order.
    prompts = ["Which loan", "How much", "Over how long", "monthly income", "EMI:"]
    positions = [result.stdout.index(p) for p in prompts]
    assert positions == sorted(positions)


def test_session_resumes_across_runs_until_reset(tmp_path: Path) -> None:
    first = run_chat(tmp_path, "I need a car loan\n")
    assert "How much would you like to borrow" in first.stdout
    second = run_chat(tmp_path, "6 lakh\n")
    assert "Over how long" in second.stdout  # the car loan conversation went on
    third = run_chat(tmp_path, "/reset\n6 lakh\n")
    assert "cleared" in third.stdout
    assert "Over how long" not in third.stdout
    assert db_rows(tmp_path, "select close_reason from conversations order by id") == [
        ("reset",),
        (None,),
    ]


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL"),
        ({"ESOTERIC_SESSION_IDLE_MINUTES": "-5"}, "ESOTERIC_SESSION_IDLE_MINUTES"),
        ({"ESOTERIC_ADMINS": "telegram"}, "ESOTERIC_ADMINS"),
    ],
)
def test_bad_setting_stops_with_one_clear_line(
    tmp_path: Path, env: dict[str, str], name: str
) -> None:
    result = run_chat(tmp_path, "hi\n", **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0]
    assert result.stdout == ""


def test_secrets_never_reach_the_logs(tmp_path: Path) -> None:
    token = "7012345678:AAFakeTokenForLocalTestsOnly_abcdefgh"
    result = run_chat(tmp_path, "hi\n", TELEGRAM_BOT_TOKEN=token, ESOTERIC_LOG_LEVEL="DEBUG")
    assert token not in result.stdout + result.stderr


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ESOTERIC_SESSION_IDLE_MINUTES=0\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ESOTERIC_")}
    result = subprocess.run(
        [*ESOTERIC, "chat"],
        input="hi\n",
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "ESOTERIC_SESSION_IDLE_MINUTES" in result.stderr


CRASHING_PROCESS = textwrap.dedent("""
    import asyncio, sys
    from bot.runtime import open_runtime
    from bot.settings import load_settings
    from adapters.console.channel import ConsoleChannel
    from core.handlers import AgentAnswer

    class StalledModel:
        # Stands in for an LLM that never answers, so the process dies mid-turn.
        async def respond(self, ctx):
            await asyncio.Event().wait()

    async def main():
        settings = load_settings(data_dir=sys.argv[1], embedding_model_dir=sys.argv[2])
        async with open_runtime(settings) as runtime:
            for handler in runtime.service.chain.handlers:
                if isinstance(handler, AgentAnswer):
                    handler.agent = StalledModel()
            console = ConsoleChannel(runtime.service, user="asha", interactive=False)
            await runtime.service.handle(console.to_inbound("I need a home loan"))

    asyncio.run(main())
""")


def test_killed_mid_turn_answers_exactly_once_after_restart(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_PROCESS, str(tmp_path), str(tmp_path / "no-model")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (tmp_path / "esoteric.db").exists():
                try:
                    if db_rows(tmp_path, "select status from messages where direction='in'"):
                        break
                except sqlite3.OperationalError:
                    pass  # schema still being created
            time.sleep(0.05)
        else:
            pytest.fail("the inbound message was never stored")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()  # the test failed before its own kill
        proc.communicate(timeout=30)  # reaps it and closes its pipes
    assert db_rows(tmp_path, "select status from messages") == [("received",)]

    restarted = run_chat(tmp_path, "")
    assert restarted.returncode == 0, restarted.stderr
    assert "Home Loan" in restarted.stdout and "How much" in restarted.stdout
    again = run_chat(tmp_path, "")
    assert again.stdout == ""
    rows = db_rows(tmp_path, "select direction, status from messages order by id")
    assert rows == [("in", "answered"), ("out", "sent")]
