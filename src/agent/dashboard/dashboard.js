// The fleet dashboard. The token comes from the login form or the URL fragment
// (#token=..., which the browser never sends); it is kept in sessionStorage and sent
// only as the Authorization header. Everything a client reported is put in the page
// as text (textContent), never as HTML.
"use strict";

const KEY = "failback-token";
const POLL_MS = 1000;
const SILENT_S = 30;
const $ = (id) => document.getElementById(id);
let timer = null;

function takeFragmentToken() {
  const m = /^#token=(.+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    // Out of the address bar and the history.
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function seconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  if (s < 10) return s.toFixed(1) + " s";
  s = Math.round(s);
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function showLogin(message) {
  if (timer) { clearTimeout(timer); timer = null; }
  $("fleet").hidden = true;
  $("empty").hidden = true;
  $("logout").hidden = true;
  $("hosts").replaceChildren();
  $("summary").replaceChildren();
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function volume(name, v) {
  const done = v.phase === "done";
  const box = el("div", "vol" + (done ? " done" : "") + (v.matched === false ? " mismatch" : ""));
  box.dataset.volume = name;
  box.append(el("strong", "name", name));
  const phase = done ? (v.matched === false ? "digest MISMATCH" : "done") : (v.phase || "planned");
  box.append(el("span", "phase", phase));
  const bar = el("div", "bar");
  const fill = el("div");
  const ratio = done ? 1 : (v.total_bytes ? Math.min(1, v.done_bytes / v.total_bytes) : 0);
  fill.style.width = (ratio * 100).toFixed(1) + "%";
  bar.append(fill);
  box.append(bar);
  const parts = [];
  if (v.target) parts.push("-> " + v.target);
  parts.push(bytes(v.pulled_bytes) + " pulled of " + bytes(v.bytes_to_pull) + " to pull");
  if (!done && v.rate) parts.push(bytes(v.rate) + "/s");
  if (!done && v.eta_s) parts.push("ETA " + seconds(v.eta_s));
  if (done && v.seconds !== null && v.seconds !== undefined) parts.push("in " + seconds(v.seconds));
  if (v.sha256) parts.push("sha256 " + v.sha256.slice(0, 16) + (v.matched ? " = source" : " != source " + (v.remote_sha256 || "").slice(0, 16)));
  const detail = el("span", "detail bytes", parts.join(" · "));
  detail.dataset.pulledBytes = String(v.pulled_bytes);
  box.append(detail);
  return box;
}

function row(h, now) {
  const tr = el("tr");
  tr.dataset.session = h.session;
  tr.dataset.state = h.state;
  tr.append(el("td", "host", h.host));
  const net = el("td", "net");
  net.append(el("div", "", h.mac || ""), el("div", "muted", h.address || h.ip));
  tr.append(net);
  tr.append(el("td", "source", h.source || ""));
  tr.append(el("td", "state state-" + h.state, h.state.replace("_", " ")));
  const vols = el("td", "volumes");
  let pulled = 0;
  for (const [name, v] of Object.entries(h.volumes || {})) {
    vols.append(volume(name, v));
    pulled += v.pulled_bytes || 0;
  }
  tr.dataset.pulledBytes = String(pulled);
  tr.append(vols);
  const pass = h.pass === null || h.pass === undefined ? "" :
    "pass " + h.pass + (h.lag_s === null || h.lag_s === undefined ? "" : ", lag " + seconds(h.lag_s));
  tr.append(el("td", "pass", pass));
  tr.append(el("td", "error", h.error || ""));
  const ago = Math.max(0, now - h.last_seen);
  const seen = el("td", "seen", seconds(ago) + " ago");
  if (ago > SILENT_S && h.state !== "done" && h.state !== "failed") {
    seen.append(el("div", "silent", "silent for " + seconds(ago)));
  }
  tr.append(seen);
  return tr;
}

function render(sessions, now) {
  const hosts = Object.values(sessions);
  hosts.sort((a, b) => a.host.localeCompare(b.host) || a.session.localeCompare(b.session));
  const counts = { planned: 0, pulling: 0, in_sync: 0, done: 0, failed: 0 };
  for (const h of hosts) counts[h.state] = (counts[h.state] || 0) + 1;
  const summary = $("summary");
  summary.replaceChildren();
  summary.append(el("span", "total", hosts.length + " hosts"));
  for (const [state, label] of [["planned", "planned"], ["pulling", "pulling"], ["in_sync", "in sync"], ["done", "done"], ["failed", "failed"]]) {
    const s = el("span", "count-" + state, counts[state] + " " + label);
    s.dataset.count = String(counts[state]);
    summary.append(s);
  }
  $("hosts").replaceChildren(...hosts.map((h) => row(h, now)));
  $("fleet").hidden = hosts.length === 0;
  $("empty").hidden = hosts.length !== 0;
}

async function poll() {
  const token = sessionStorage.getItem(KEY);
  if (!token) { showLogin(); return; }
  try {
    const resp = await fetch("/v1/sessions", {
      headers: { Authorization: "Bearer " + token },
      cache: "no-store",
      credentials: "omit",
    });
    if (resp.status === 401) {
      sessionStorage.removeItem(KEY);
      showLogin("That token is not this agent's.");
      return;
    }
    if (resp.ok) {
      const date = Date.parse(resp.headers.get("date") || "");
      const now = isNaN(date) ? Date.now() / 1000 : date / 1000;
      $("login").hidden = true;
      $("logout").hidden = false;
      render(await resp.json(), now);
    }
  } catch (e) {
    $("summary").textContent = "the agent does not answer: " + e;
  }
  timer = setTimeout(poll, POLL_MS);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("token").value);
  $("token").value = "";
  poll();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  showLogin();
});
takeFragmentToken();
poll();
