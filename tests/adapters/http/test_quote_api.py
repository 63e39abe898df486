"""A session's quote as a PDF over REST: ``GET /api/v1/sessions/{id}/quote.pdf`` through the
real app, after a conversation with the scripted agent reached a quote. The file is read back
with pypdf (the exact EMI, the reference), is the same bytes when asked again, and each send is
in the audit log with the figures the customer received. No quote yet is a 404 with a clear
error; another key's session is a 404 too; no key is a 401."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
from pypdf import PdfReader

from core.loan import emi
from core.money import format_money
from tests.adapters.http.conftest import KEY, OTHER_KEY, Api


async def chat(api: Api, session: str, message: str) -> httpx.Response:
    body = {"session_id": session, "message": message}
    return await api.client.post("/api/v1/chat", headers=api.headers(KEY), json=body)


async def quote_pdf(api: Api, session: str, key: str | None = KEY) -> httpx.Response:
    headers = api.headers(key) if key else {}
    return await api.client.get(f"/api/v1/sessions/{session}/quote.pdf", headers=headers)


def audit_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "data" / "esoteric.db") as conn:
        return conn.execute(
            "SELECT actor, action, outcome, target, details FROM audit_log "
            "WHERE action = 'quote_pdf' ORDER BY id"
        ).fetchall()


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


async def test_the_latest_quote_comes_as_the_same_pdf_each_time(api: Api, tmp_path: Path) -> None:
    session = await api.new_session()
    before = await quote_pdf(api, session)
    assert before.status_code == 404
    assert before.headers["content-type"] == "application/json"
    assert "no quote yet" in before.json()["detail"]
    assert audit_rows(tmp_path) == []

    for message in ("I need a home loan of 25 lakh for 20 years", "my salary is 1.5 lakh a month"):
        assert (await chat(api, session, message)).status_code == 200

    first = await quote_pdf(api, session)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/pdf"
    disposition = first.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="KFS-') and disposition.endswith('.pdf"')
    reference = disposition.split('filename="')[1].removesuffix('.pdf"')
    assert first.content.startswith(b"%PDF-")

    text = pdf_text(first.content)
    rate = api.runtime.catalogue.get("home").annual_rate
    expected_emi = format_money(emi(2_500_000, rate, 240))
    for figure in (expected_emi, "₹25,00,000", reference):
        assert figure in text, figure
    assert "This is a quote, not a sanction" in text

    # Asked again: the same document, byte for byte.
    again = await quote_pdf(api, session)
    assert again.status_code == 200 and again.content == first.content

    # Each send is recorded with the figures the customer received; the actor is the
    # session's tag, never its id (which is as good as a password).
    sends = audit_rows(tmp_path)
    assert len(sends) == 2
    for actor, action, outcome, target, details in sends:
        assert actor.startswith("api:web:") and session not in actor
        assert (action, outcome) == ("quote_pdf", "ok")
        assert target.startswith("conversation:")
        sent = json.loads(details)
        assert sent["kind"] == "quote" and sent["reference"] == reference
        assert sent["product"] == "home" and sent["tenure_months"] == 240
        assert sent["figures"]["emi"] == str(emi(2_500_000, rate, 240))


async def test_a_quote_needs_the_key_of_its_session(api: Api, tmp_path: Path) -> None:
    session = await api.new_session()
    for message in ("I need a home loan of 25 lakh for 20 years", "my salary is 1.5 lakh a month"):
        assert (await chat(api, session, message)).status_code == 200

    no_key = await quote_pdf(api, session, key=None)
    assert no_key.status_code == 401 and "API key" in no_key.json()["detail"]
    wrong_key = await quote_pdf(api, session, key="not-a-key-of-ours-000000")
    assert wrong_key.status_code == 401
    # Another key's session is indistinguishable from one that does not exist.
    other = await quote_pdf(api, session, key=OTHER_KEY)
    assert other.status_code == 404 and other.json()["detail"] == "no such session for this API key"
    unknown = await quote_pdf(api, "x" * 32)
    assert unknown.status_code == 404
    assert audit_rows(tmp_path) == []


async def test_the_route_is_in_the_openapi_schema(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    route = schema["paths"]["/api/v1/sessions/{session_id}/quote.pdf"]["get"]
    assert "application/pdf" in route["responses"]["200"]["content"]
    assert {"401", "404"} <= set(route["responses"])
