// streamguard console. The token lives in sessionStorage (this tab only) and goes in the
// Authorization header of every request, the alert feed included (read with fetch, not
// EventSource, which cannot send headers), so it never appears in a URL.
import { renderChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const KEY = "streamguard.token";
const PICTURE_MS = 1000, STREAMS_MS = 2000, CHART_MS = 2000, FEED_RETRY_MS = 2000, MAX_ALERTS = 200;
const WHY = { below_threshold: "score fell below the threshold", track_ended: "the face left the picture",
              stream_ended: "the stream ended", shutdown: "the stream was stopped (removed, or streamguard stopped)" };

let token = sessionStorage.getItem(KEY) || "";
const cards = new Map();   // stream name -> {el, stopped}
const alerts = new Map();  // alert id -> {item, li}
let detail = null;         // {stream, track, timers}

// A token in the address's fragment (make demo prints one) is taken once and removed:
// fragments are never sent to the server, and replaceState drops it from the history.
if (location.hash.startsWith("#token=")) {
  token = decodeURIComponent(location.hash.slice(7));
  sessionStorage.setItem(KEY, token);
  history.replaceState(null, "", location.pathname);
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: headers(options.headers), cache: "no-store" });
  if (resp.status === 401) { askToken("That token was refused."); throw new Error("unauthorized"); }
  return resp;
}

async function errorText(resp) {
  try { return (await resp.json()).error || resp.statusText; } catch { return resp.statusText; }
}

function node(tag, props = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") n.className = v; else if (k.startsWith("data-")) n.setAttribute(k, v); else n[k] = v;
  }
  n.append(...children.filter((c) => c != null));
  return n;
}

const ago = (seconds) => seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
const fmt = (v, digits = 1, unit = "") => v == null ? "–" : `${v.toFixed(digits)}${unit}`;

// --- login ------------------------------------------------------------------

function askToken(message = "") {
  if (message) sessionStorage.removeItem(KEY);
  token = "";
  stopAll();
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

async function open() {
  const resp = await fetch("/console/api/streams", { headers: headers(), cache: "no-store" });
  if (resp.status === 401) {
    askToken(token ? "That token was refused." : "");
    return;
  }
  if (!resp.ok) { $("login-error").textContent = await errorText(resp); return; }
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = !token;
  showStreams((await resp.json()).streams);
  streamsLoop();
  feedLoop();
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();  // empty: a server without a token (loopback demo)
  sessionStorage.setItem(KEY, token);
  $("token").value = "";
  open();
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); askToken(); });

// --- streams ----------------------------------------------------------------

let generation = 0;  // bumped by stopAll: loops of an older generation end
function stopAll() {
  generation++;
  for (const name of [...cards.keys()]) dropCard(name);
  feedAbort?.abort();
}

async function streamsLoop() {
  const mine = generation;
  while (mine === generation) {
    await new Promise((r) => setTimeout(r, STREAMS_MS));
    if (mine !== generation || document.hidden) continue;
    try {
      const resp = await api("/console/api/streams");
      if (resp.ok && mine === generation) showStreams((await resp.json()).streams);
    } catch { /* refused (asked for the token) or offline: the next round tries again */ }
  }
}

function showStreams(list) {
  const seen = new Set();
  for (const s of list) {
    if (removing.has(s.name)) continue;
    seen.add(s.name);
    let card = cards.get(s.name);
    if (!card) card = addCard(s.name);
    updateCard(card, s);
  }
  for (const name of [...cards.keys()]) if (!seen.has(name)) dropCard(name);
  countStreams();
}

function countStreams() {
  $("stream-count").textContent = `(${cards.size})`;
  $("no-streams").hidden = cards.size > 0;
}

function addCard(name) {
  const img = node("img", { alt: `latest analysed frame of ${name}` });
  const remove = node("button", { class: "remove", type: "button", textContent: "Remove", title: `stop analysing ${name}` });
  const el = node("article", { class: "card", "data-stream": name },
    node("div", { class: "pic" }, node("span", { class: "nopic", textContent: "waiting for a frame…" }), img),
    node("div", { class: "meta" }, node("b", { textContent: name }), node("span", { class: "state" }), remove),
    node("div", { class: "stats" }), node("ul", { class: "faces" }));
  remove.addEventListener("click", () => removeStream(name));
  $("grid").append(el);
  const card = { el, img, stopped: false, visible: false, url: null };
  // Only pictures someone can see are asked for: the server draws none for the others.
  card.observer = new IntersectionObserver((entries) => { card.visible = entries.some((e) => e.isIntersecting); });
  card.observer.observe(el);
  cards.set(name, card);
  pictureLoop(name, card, img);
  return card;
}

function dropCard(name) {
  const card = cards.get(name);
  if (!card) return;
  card.stopped = true;
  card.observer.disconnect();
  card.el.remove();
  if (card.url) URL.revokeObjectURL(card.url);
  cards.delete(name);
  countStreams();
}

function updateCard(card, s) {
  const state = card.el.querySelector(".state");
  state.textContent = s.state;
  state.className = `state ${s.state}`;
  const latency = s.latency_s == null ? "–" : `${Math.round(s.latency_s * 1000)} ms`;
  card.el.querySelector(".stats").textContent =
    `${fmt(s.analysed_fps)} fps analysed · latency ${latency} · ${s.frames_dropped} dropped` +
    (s.resolution ? ` · ${s.resolution}` : "") + (s.detail && s.state !== "live" ? ` · ${s.detail}` : "");
  const faces = card.el.querySelector(".faces");
  faces.replaceChildren(...s.faces.map((f) => {
    const hot = f.score >= s.threshold;
    const b = node("button", { type: "button", class: hot ? "hot" : "", textContent: `#${f.track} ${f.score.toFixed(2)}`,
                               title: "open this identity's score chart", "data-track": String(f.track) });
    b.addEventListener("click", () => openDetail(s.name, f.track));
    return node("li", {}, b);
  }));
  card.el.classList.toggle("hot", s.faces.some((f) => f.score >= s.threshold));
}

async function pictureLoop(name, card, img) {
  while (!card.stopped) {
    if (card.visible && !document.hidden) {
      const url = await picture(name, card);
      if (url) {
        img.src = url;
        card.el.querySelector(".nopic").hidden = true;
      }
    }
    await new Promise((r) => setTimeout(r, PICTURE_MS));
  }
}

// The picture's JPEG through fetch (it needs the token), shown as a blob: URL.
async function picture(name, holder) {
  try {
    const resp = await api(`/console/api/streams/${encodeURIComponent(name)}/snapshot.jpg`);
    if (resp.status !== 200 || holder.stopped) return null;
    const blob = await resp.blob();
    if (holder.url) URL.revokeObjectURL(holder.url);
    holder.url = URL.createObjectURL(blob);
    holder.img?.setAttribute("data-faces", resp.headers.get("X-Streamguard-Faces") || "0");
    return holder.url;
  } catch { return null; }
}

$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const body = { name: form.name.value.trim(), url: form.url.value.trim() };
  $("manage-error").textContent = "";
  try {
    const resp = await api("/streams", { method: "POST", body: JSON.stringify(body),
                                         headers: { "Content-Type": "application/json" } });
    if (resp.status !== 201) { $("manage-error").textContent = `${resp.status}: ${await errorText(resp)}`; return; }
    form.reset();
    const list = await api("/console/api/streams");
    if (list.ok) showStreams((await list.json()).streams);
  } catch (err) { $("manage-error").textContent = String(err.message || err); }
});

const removing = new Set();  // asked to go: no card, no picture for them until the API answers

async function removeStream(name) {
  $("manage-error").textContent = "";
  const card = cards.get(name);
  if (card) { card.stopped = true; card.el.querySelector(".state").textContent = "removing…"; }
  removing.add(name);
  try {
    const resp = await api(`/streams/${encodeURIComponent(name)}`, { method: "DELETE" });
    if (resp.status !== 200) $("manage-error").textContent = `${resp.status}: ${await errorText(resp)}`;
  } catch (err) { $("manage-error").textContent = String(err.message || err); }
  dropCard(name);
  removing.delete(name);
}

// --- alert feed (server-sent events read with fetch) ----------------------------

let feedAbort = null;

async function feedLoop() {
  const mine = generation;
  while (mine === generation) {
    feedAbort = new AbortController();
    try {
      const resp = await api("/console/api/feed", { signal: feedAbort.signal });
      if (!resp.ok) throw new Error(await errorText(resp));
      setConn("live", "live");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          handleMessage(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch { /* aborted, refused, or the server went away */ }
    if (mine !== generation) return;
    setConn("down", "reconnecting…");
    await new Promise((r) => setTimeout(r, FEED_RETRY_MS));
  }
}

function setConn(kind, text) {
  $("conn").className = `pill ${kind}`;
  $("conn").textContent = text === "live" ? "feed live" : `feed ${text}`;
}

function handleMessage(text) {
  let event = "message", data = "";
  for (const line of text.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  const payload = JSON.parse(data);
  if (event === "backlog") {  // through the front door, one per worker: keep the list newest first
    for (const item of payload.slice().reverse()) showAlert(item);
    const items = [...$("feed").children].sort((a, b) => Number(b.dataset.opened) - Number(a.dataset.opened));
    $("feed").append(...items);
  }
  else if (event === "alert") showAlert(payload);
  else if (event === "stream") {
    const card = cards.get(payload.stream);
    if (card) { const s = card.el.querySelector(".state"); s.textContent = payload.state; s.className = `state ${payload.state}`; }
  }
}

function showAlert(item) {
  let entry = alerts.get(item.id);
  if (!entry) {
    const li = node("li", { "data-alert": item.id, "data-stream": item.stream, "data-track": String(item.track),
                            "data-opened": String(item.opened),
                            tabIndex: 0, title: "open the score chart" });
    li.addEventListener("click", () => openDetail(item.stream, item.track));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") openDetail(item.stream, item.track); });
    entry = { item, li, face: false };
    alerts.set(item.id, entry);
    $("feed").prepend(li);
    while (alerts.size > MAX_ALERTS) {
      const [oldest] = alerts.keys();
      alerts.get(oldest).li.remove();
      alerts.delete(oldest);
    }
  }
  entry.item = item;
  renderAlert(entry);
  $("no-alerts").hidden = true;
}

function renderAlert(entry) {
  const { item, li } = entry;
  const open = item.cleared == null;
  li.classList.toggle("cleared", !open);
  let thumb = li.querySelector(".thumb");
  if (!thumb) {
    thumb = node("img", { class: "thumb", alt: "face" });
    if (item.face) faceThumb(item.id, thumb);
  }
  const age = open ? `open ${ago(Date.now() / 1000 - item.opened)}`
                   : `cleared after ${ago(item.cleared - item.opened)}: ${WHY[item.reason] || item.reason}`;
  li.replaceChildren(thumb, node("div", {},
    node("div", {}, node("span", { class: "score", textContent: item.score.toFixed(2) }),
         ` ${item.stream} · identity #${item.track}`),
    node("div", { class: "why", textContent: `${age} · threshold ${item.threshold.toFixed(2)}` })));
}

async function faceThumb(id, img) {
  try {
    const resp = await api(`/console/api/alerts/${encodeURIComponent(id)}/face.jpg`);
    if (resp.ok) img.src = URL.createObjectURL(await resp.blob());
  } catch { /* the face is gone from memory: the entry stays without it */ }
}

setInterval(() => { for (const entry of alerts.values()) if (entry.item.cleared == null) renderAlert(entry); }, 1000);

// --- one click to see why ----------------------------------------------------

function openDetail(stream, track) {
  closeDetail();
  $("detail-title").textContent = `${stream} · identity #${track}`;
  $("detail-img").removeAttribute("src");
  const holder = { stopped: false, url: null, img: $("detail-img") };
  detail = { stream, track, holder };
  const tick = async () => {
    if (holder.stopped) return;
    const url = await picture(stream, holder);
    if (url && !holder.stopped) $("detail-img").src = url;
    try {
      const resp = await api(`/console/api/streams/${encodeURIComponent(stream)}/history`);
      if (resp.ok && !holder.stopped) {
        const data = await resp.json();
        const mine = renderChart($("chart"), data, track);
        const last = mine.points[mine.points.length - 1];
        $("detail-info").textContent = last
          ? `window score ${last[1].toFixed(2)} (threshold ${data.threshold.toFixed(2)}); ${mine.alerts.length} alert(s) in view`
          : "no scores kept for this identity (it left more than the history's minutes ago)";
      }
    } catch { /* keep the last chart */ }
    if (!holder.stopped) holder.timer = setTimeout(tick, CHART_MS);
  };
  $("detail").showModal();
  tick();
}

function closeDetail() {
  if (!detail) return;
  detail.holder.stopped = true;
  clearTimeout(detail.holder.timer);
  detail = null;
}

$("detail-close").addEventListener("click", () => $("detail").close());
$("detail").addEventListener("close", closeDetail);

// Without a token kept for this tab, ask first: no request the server would refuse.
if (token || sessionStorage.getItem(KEY) === "") open(); else askToken();

