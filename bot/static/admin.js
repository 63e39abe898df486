"use strict";
// The sales dashboard: every panel drawn from /api/v1/admin JSON (the session cookie goes with
// each request), text only through textContent, charts as SVG built here (no library, no CDN).
(() => {
  const API = "/api/v1/admin";
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#1f5fbf", "#f08c00", "#2f9e44", "#ae3ec9", "#e03131", "#0c8599"];
  const STEPS = { conversations: "Conversations", quotes: "Quotes given", leads: "Leads with consent",
                  claimed: "Handoffs claimed", won: "Won" };
  const $ = id => document.getElementById(id);
  const state = { days: "7", from: "", to: "", channel: "", metric: "conversations", daily: null,
                  conversation: null };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }
  const pct = x => (x == null ? "–" : `${(x * 100).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`);
  const num = x => (x == null ? "–" : Number(x).toLocaleString("en-IN"));
  const minutes = x => (x == null ? "–" : `${Number(x).toFixed(1)} min`);
  const ms = x => (x == null ? "–" : `${Math.round(x)} ms`);
  const when = iso => (iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "");

  function query() {
    const params = new URLSearchParams();
    if (state.days === "custom") { params.set("from", state.from); params.set("to", state.to); }
    else params.set("days", state.days);
    if (state.channel) params.set("channel", state.channel);
    return params;
  }
  async function get(path, params) {
    const url = `${API}/${path}${params && [...params].length ? "?" + params : ""}`;
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401 || response.status === 403) { location.assign("/admin/login"); throw new Error("logged out"); }
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  }
  function tile(label, value, name) {
    return el("div", { class: "tile", "data-name": name }, el("span", { class: "value", text: value }), el("span", { class: "label", text: label }));
  }

  // -- panels -----------------------------------------------------------------------------------
  function drawFunnel(data) {
    const list = $("funnel");
    const top = Math.max(1, ...data.steps.map(s => s.count));
    list.replaceChildren(...data.steps.map((s, i) => {
      const fill = el("span"); fill.style.width = `${(100 * s.count / top).toFixed(1)}%`;
      return el("li", { class: "step", "data-step": s.step },
        el("span", { class: "label", text: STEPS[s.step] || s.step }),
        el("span", { class: "count", text: String(s.count) }),
        el("div", { class: "bar" }, fill),
        el("span", { class: "conversion", text: i === 0 ? "start" : `${pct(s.conversion)} of ${STEPS[data.steps[i - 1].step].toLowerCase()}` }));
    }));
    $("period").textContent = `${data.period.from} to ${data.period.to}`;
  }

  function drawDaily() {
    const data = state.daily, box = $("daily-chart"), metric = state.metric;
    if (!data) return;
    const days = [...new Set(data.days.map(d => d.day))].sort();
    const channels = [...new Set(data.days.map(d => d.channel))].sort();
    const value = {};
    for (const d of data.days) value[`${d.day}|${d.channel}`] = d[metric] || 0;
    $("legend").replaceChildren(...channels.map((c, i) => {
      const swatch = el("i"); swatch.style.background = COLOURS[i % COLOURS.length];
      return el("span", {}, swatch, c);
    }));
    if (!days.length) { box.replaceChildren(el("p", { class: "muted", text: "Nothing in this period." })); return; }
    // Drawn at the box's own width, so its text keeps its size on a phone and a wide screen.
    const width = Math.max(300, box.clientWidth || 760), height = 220, left = 36, bottom = 22, top = 10;
    const totals = days.map(day => channels.reduce((t, c) => t + (value[`${day}|${c}`] || 0), 0));
    const peak = Math.max(1, ...totals);
    const step = (width - left) / days.length, bar = Math.max(2, Math.min(48, step * 0.7));
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                               "aria-label": `${metric} per day by channel` });
    const y = v => top + (height - top - bottom) * (1 - v / peak);
    for (const tick of [0, Math.ceil(peak / 2), peak]) {
      chart.append(svg("line", { x1: left, x2: width, y1: y(tick), y2: y(tick), stroke: "#e4e7ec" }));
      const label = svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }); label.textContent = String(tick);
      chart.append(label);
    }
    const every = Math.ceil(days.length / Math.max(2, Math.floor(width / 70)));
    days.forEach((day, i) => {
      const x = left + i * step + (step - bar) / 2;
      let base = 0;
      channels.forEach((c, j) => {
        const v = value[`${day}|${c}`] || 0;
        if (!v) return;
        const rect = svg("rect", { x, width: bar, y: y(base + v), height: y(base) - y(base + v),
                                   fill: COLOURS[j % COLOURS.length], "data-day": day, "data-channel": c, "data-value": v });
        const title = svg("title"); title.textContent = `${day} ${c}: ${v} ${metric}`; rect.append(title);
        chart.append(rect); base += v;
      });
      if (i % every === 0) {
        const label = svg("text", { x: x + bar / 2, y: height - 6, "text-anchor": "middle" });
        label.textContent = day.slice(5); chart.append(label);
      }
    });
    box.replaceChildren(chart);
  }

  function drawHandoffs(data) {
    $("handoff-tiles").replaceChildren(
      tile("median time to claim", minutes(data.median_minutes_to_claim), "median"),
      tile("p90 time to claim", minutes(data.p90_minutes_to_claim), "p90"),
      tile("SLA breaches", num(data.sla_breaches), "breaches"));
    const rows = data.reps.map(r => el("tr", {}, el("td", { text: r.name ? `${r.name} (${r.rep})` : r.rep }),
      el("td", { class: "num", text: num(r.claims) }), el("td", { class: "num", text: num(r.wins) })));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "3", class: "muted", text: "No claims in this period." })));
    document.querySelector("#reps tbody").replaceChildren(...rows);
  }

  function drawLlm(data) {
    $("llm-tiles").replaceChildren(
      tile("prompt tokens", num(data.prompt_tokens), "prompt"),
      tile("completion tokens", num(data.completion_tokens), "completion"),
      tile("estimated cost", `${data.estimated_cost} ${data.currency}`, "cost"),
      tile("turns", num(data.turns), "turns"),
      tile("fallback rate", pct(data.fallback_rate), "fallback"),
      tile("breaker openings", num(data.breaker_openings), "breaker"),
      tile("p50 turn latency", ms(data.latency_ms && data.latency_ms.p50), "p50"),
      tile("p95 turn latency", ms(data.latency_ms && data.latency_ms.p95), "p95"));
  }

  function drawGaps(data) {
    const items = data.groups.map(g => el("li", {},
      el("span", { class: "question", text: g.question }), " ",
      el("span", { class: "count", text: `× ${g.count}` }),
      g.example_conversation != null ? el("a", { href: `#conversation-${g.example_conversation}`, "data-conversation": String(g.example_conversation), text: "example" }) : null));
    if (!items.length) items.push(el("li", { class: "muted empty", text: "No unanswered questions in this period." }));
    $("gaps").replaceChildren(...items);
  }

  // -- conversations ----------------------------------------------------------------------------
  async function search() {
    const params = query();
    const q = $("q").value.trim();
    if (q) params.set("q", q);
    const data = await get("conversations", params);
    const items = data.results.map(c => {
      const button = el("button", { type: "button", "data-id": String(c.id) },
        el("span", { class: "who", text: c.customer || `Conversation #${c.id}` }),
        el("span", { class: "meta", text: [c.phone, c.channel, c.status, when(c.started_at)].filter(Boolean).join(" · ") }));
      button.addEventListener("click", () => openConversation(c.id));
      return el("li", {}, button);
    });
    if (!items.length) items.push(el("li", { class: "muted", text: "No conversations found." }));
    $("results").replaceChildren(...items);
    markChosen();
  }
  function markChosen() {
    for (const b of document.querySelectorAll("#results button")) b.classList.toggle("on", b.dataset.id === String(state.conversation));
  }
  // Phone numbers inside messages (a customer typing theirs, the bot confirming it) are masked
  // as the header's is: the country code, two digits and the last three.
  const PHONE = /(\+\d{1,3}[\s-]?)?\d(?:[\s-]?\d){9,13}/g;
  function maskPhones(text) {
    return text.replace(PHONE, match => {
      const digits = match.replace(/\D/g, "");
      const country = match.trim().startsWith("+") && digits.length > 10 ? `+${digits.slice(0, -10)} ` : "";
      const local = country ? digits.slice(-10) : digits;
      return country + local.slice(0, 2) + "x".repeat(local.length - 5) + local.slice(-3);
    });
  }
  // The replies' **bold** shown as bold; everything else as plain text, never as HTML.
  function bold(parent, text) {
    text.split(/(\*\*[^*\n]+\*\*)/).forEach(part => {
      if (part.startsWith("**") && part.endsWith("**") && part.length > 4) parent.append(el("strong", { text: part.slice(2, -2) }));
      else if (part) parent.append(part);
    });
  }
  function describeCall(call) {
    if (typeof call === "string") return call;
    const name = call.name || call.tool || call.function || "tool";
    const args = call.arguments || call.args || call.input;
    return maskPhones(args ? `${name}(${typeof args === "string" ? args : JSON.stringify(args)})` : name);
  }
  function describeCitation(c) {
    if (typeof c === "string") return c;
    return c.title || c.source || c.path || c.id || JSON.stringify(c);
  }
  async function openConversation(id) {
    state.conversation = id; markChosen();
    const box = $("transcript");
    box.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    const data = await get(`conversations/${encodeURIComponent(id)}`);
    const head = el("h3", { text: `#${data.id} · ${data.customer || "unknown customer"}${data.phone ? " · " + data.phone : ""} · ${data.channel}` });
    const bubbles = data.messages.map(m => {
      const bubble = el("div", { class: `msg ${m.direction === "in" ? "in" : "out"}${m.handoff ? " handoff" : ""}` },
        el("span", { class: "who", text: `${m.author} · ${when(m.at)}` }));
      if (m.handoff) bubble.querySelector(".who").append(el("span", { class: "tag", text: "handoff" }));
      bold(bubble, maskPhones(m.text || ""));
      if (m.tool_calls && m.tool_calls.length) {
        const tools = el("div", { class: "tools" }, "Tools: ");
        m.tool_calls.forEach((t, i) => { if (i) tools.append(", "); tools.append(el("code", { text: describeCall(t) })); });
        bubble.append(tools);
      }
      if (m.citations && m.citations.length) bubble.append(el("div", { class: "citations", text: `Sources: ${m.citations.map(describeCitation).join(", ")}` }));
      return bubble;
    });
    box.replaceChildren(head, ...bubbles);
    box.dataset.conversation = String(data.id);
  }

  // -- loading ----------------------------------------------------------------------------------
  async function load() {
    document.body.dataset.state = "loading";
    $("error").hidden = true;
    const params = query();
    for (const [id, file] of [["leads-csv", "leads.csv"], ["funnel-csv", "funnel.csv"]]) $(id).href = `${API}/${file}?${params}`;
    try {
      const [funnel, daily, handoffs, llm, gaps] = await Promise.all(
        ["funnel", "daily", "handoffs", "llm", "gaps"].map(p => get(p, params)));
      drawFunnel(funnel); state.daily = daily; drawDaily(); drawHandoffs(handoffs); drawLlm(llm); drawGaps(gaps);
      await search();
      document.body.dataset.state = "ready";
    } catch (error) {
      $("error").textContent = `Could not load the dashboard (${error.message}). Try again.`;
      $("error").hidden = false;
      document.body.dataset.state = "error";
    }
  }

  function init() {
    const today = new Date().toISOString().slice(0, 10);
    $("to").value = today;
    $("from").value = new Date(Date.now() - 6 * 864e5).toISOString().slice(0, 10);
    for (const b of document.querySelectorAll(".periods button")) {
      b.addEventListener("click", () => {
        for (const o of document.querySelectorAll(".periods button")) o.classList.toggle("on", o === b);
        $("custom").hidden = b.dataset.days !== "custom";
        if (b.dataset.days === "custom") { $("from").focus(); state.days = "custom"; return; }
        state.days = b.dataset.days; load();
      });
    }
    $("custom").addEventListener("submit", event => {
      event.preventDefault();
      state.from = $("from").value; state.to = $("to").value; state.days = "custom"; load();
    });
    $("channel").addEventListener("change", () => { state.channel = $("channel").value; load(); });
    for (const b of document.querySelectorAll(".metric button")) {
      b.addEventListener("click", () => {
        for (const o of document.querySelectorAll(".metric button")) o.classList.toggle("on", o === b);
        state.metric = b.dataset.metric; drawDaily();
      });
    }
    let resizing = 0;
    addEventListener("resize", () => { cancelAnimationFrame(resizing); resizing = requestAnimationFrame(drawDaily); });
    $("search").addEventListener("submit", event => { event.preventDefault(); search().catch(showError); });
    $("gaps").addEventListener("click", event => {
      const link = event.target.closest("a[data-conversation]");
      if (!link) return;
      event.preventDefault();
      openConversation(link.dataset.conversation).then(() => $("conversations-panel").scrollIntoView()).catch(showError);
    });
    const hash = /^#conversation-(\d+)$/.exec(location.hash);
    load().then(() => { if (hash) openConversation(hash[1]).catch(showError); });
  }
  function showError(error) { $("error").textContent = String(error.message || error); $("error").hidden = false; }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
