/**
 * The live status page of the admin API: plain HTML, CSS and JavaScript,
 * held as strings so that serving them needs no build step and no file
 * access. The script polls `api/v1/stats` and `api/v1/sessions` (paths
 * relative to the page, so the handler can be mounted under a prefix) once
 * a second, draws a throughput sparkline from successive byte totals, and
 * puts every string into the DOM through `textContent`: destinations and
 * user names come from clients.
 *
 * A token given as `?token=...` is kept in `sessionStorage`, removed from
 * the address bar, and sent as `Authorization: Bearer ...`; without one, a
 * 401 shows a form that asks for it.
 *
 * @module
 */

/**
 * The page. It loads `status.css` and `status.js` from its own directory.
 *
 * @example
 * ```ts
 * import { STATUS_HTML } from "./status_page.ts";
 * new Response(STATUS_HTML, { headers: { "content-type": "text/html; charset=utf-8" } });
 * ```
 */
export const STATUS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>dualsocks status</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="status.css">
<script src="status.js" defer></script>
</head>
<body>
<header>
  <h1>dualsocks</h1>
  <span id="state" class="state" data-state="unknown">connecting</span>
  <span id="listen" class="muted"></span>
  <span id="uptime" class="muted"></span>
</header>
<form id="login" hidden>
  <label for="token">This gateway needs its admin token:</label>
  <input id="token" name="token" type="password" autocomplete="off" required>
  <button type="submit">Show status</button>
  <span id="login-error" class="error"></span>
</form>
<main>
  <section class="types" aria-label="Relays by RFC 3089 type">
${
  [["A", "IPv4 → IPv4"], ["B", "IPv4 → IPv6"], ["C", "IPv6 → IPv4"], ["D", "IPv6 → IPv6"]]
    .map(([t, what]) =>
      `    <article class="type" data-type="${t}">
      <h2>${t} <small>${what}</small></h2>
      <dl>
        <dt>active</dt><dd data-field="active">0</dd>
        <dt>total</dt><dd data-field="total">0</dd>
        <dt>up</dt><dd data-field="up">0 B</dd>
        <dt>down</dt><dd data-field="down">0 B</dd>
      </dl>
    </article>`
    ).join("\n")
}
  </section>
  <section class="totals" aria-label="Counters">
    <dl>
      <div><dt>sessions</dt><dd id="sessions-total">0</dd></div>
      <div><dt>active</dt><dd id="sessions-active">0</dd></div>
      <div><dt>rejected</dt><dd id="sessions-rejected">0</dd></div>
      <div><dt>auth failures</dt><dd id="auth-failures">0</dd></div>
      <div><dt>rule denials</dt><dd id="rule-denials">0</dd></div>
      <div><dt>DNS lookups</dt><dd id="dns-lookups">0</dd></div>
      <div><dt>DNS failures</dt><dd id="dns-failures">0</dd></div>
    </dl>
  </section>
  <section class="throughput">
    <h2>Throughput <span id="rate" class="muted">-</span></h2>
    <canvas id="sparkline" width="720" height="64" aria-label="throughput, last two minutes"></canvas>
  </section>
  <section>
    <h2>Active sessions (<span id="count">0</span>)</h2>
    <table id="sessions">
      <thead>
        <tr><th>id</th><th>client</th><th>user</th><th>command</th><th>destination</th>
        <th>resolved</th><th>type</th><th>phase</th><th>up</th><th>down</th><th>age</th><th></th></tr>
      </thead>
      <tbody></tbody>
    </table>
    <p id="empty" class="muted">No active sessions.</p>
  </section>
</main>
<footer><span id="error" class="error" role="status"></span></footer>
</body>
</html>
`;

/**
 * The page's style sheet.
 *
 * @example
 * ```ts
 * import { STATUS_CSS } from "./status_page.ts";
 * new Response(STATUS_CSS, { headers: { "content-type": "text/css; charset=utf-8" } });
 * ```
 */
export const STATUS_CSS = `:root {
  color-scheme: light dark;
  --fg: #1d2230; --bg: #f6f7f9; --card: #fff; --muted: #6b7280; --line: #dde1e7;
  --accent: #2563eb; --ok: #15803d; --warn: #b45309; --bad: #b91c1c;
}
@media (prefers-color-scheme: dark) {
  :root { --fg: #e5e7eb; --bg: #111318; --card: #1b1e25; --muted: #9ca3af; --line: #2d323c;
    --accent: #60a5fa; --ok: #4ade80; --warn: #fbbf24; --bad: #f87171; }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1rem; align-items: baseline; padding: .75rem 1.25rem;
  border-bottom: 1px solid var(--line); background: var(--card); flex-wrap: wrap; }
h1 { font-size: 1.25rem; margin: 0; }
h2 { font-size: 1rem; margin: 0 0 .5rem; }
small, .muted { color: var(--muted); font-weight: normal; }
main { padding: 1rem 1.25rem; display: grid; gap: 1rem; }
.state { padding: .1rem .5rem; border-radius: 1rem; font-weight: 600; background: var(--line); }
.state[data-state="ready"] { color: var(--ok); }
.state[data-state="draining"] { color: var(--warn); }
.state[data-state="error"] { color: var(--bad); }
.types { display: grid; grid-template-columns: repeat(auto-fit, minmax(12rem, 1fr)); gap: .75rem; }
.type, .totals, .throughput, section > table { background: var(--card); border: 1px solid var(--line);
  border-radius: .5rem; }
.type, .totals, .throughput { padding: .75rem 1rem; }
dl { display: grid; grid-template-columns: auto 1fr; gap: .15rem .75rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; font-variant-numeric: tabular-nums; text-align: right; }
.totals dl { display: flex; flex-wrap: wrap; gap: .5rem 2.5rem; }
.totals dl > div { display: flex; flex-direction: column; }
.totals dd { text-align: left; font-size: 1.25rem; }
canvas { width: 100%; height: 64px; display: block; }
table { width: 100%; border-collapse: collapse; }
th, td { padding: .35rem .6rem; text-align: left; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
td { font-variant-numeric: tabular-nums; }
td[data-field="destination"], td[data-field="resolved"], td[data-field="user"] {
  max-width: 22rem; overflow: hidden; text-overflow: ellipsis; }
tbody tr:last-child td { border-bottom: 0; }
button { font: inherit; cursor: pointer; }
form { padding: 1rem 1.25rem; display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
.error { color: var(--bad); }
footer { padding: 0 1.25rem 1rem; min-height: 1.5rem; }
`;

/**
 * The page's script (a classic script, no modules, no dependencies).
 *
 * @example
 * ```ts
 * import { STATUS_JS } from "./status_page.ts";
 * new Response(STATUS_JS, { headers: { "content-type": "text/javascript; charset=utf-8" } });
 * ```
 */
export const STATUS_JS = `"use strict";
(function () {
  var TOKEN_KEY = "dualsocks-admin-token";
  var POLL_MS = 1000;
  var POINTS = 120;

  // A token in the address bar moves to sessionStorage and out of the URL.
  var params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token") || "");
    params.delete("token");
    var rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }

  function $(id) { return document.getElementById(id); }
  function setText(el, text) {
    text = String(text);
    if (el.textContent !== text) el.textContent = text;
  }

  function Unauthorized(message) { this.message = message; }

  function request(path, method) {
    var headers = { Accept: "application/json" };
    var token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(path, { method: method || "GET", headers: headers, cache: "no-store" })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (body) {
          if (res.status === 401) throw new Unauthorized(body.message || "token required");
          if (!res.ok) throw new Error(body.message || res.status + " " + res.statusText);
          return body;
        });
      });
  }

  function bytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
  }
  function duration(seconds) {
    seconds = Math.floor(seconds);
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    if (h > 0) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m > 0) return m + "m " + String(s).padStart(2, "0") + "s";
    return s + "s";
  }

  // --- counters ---------------------------------------------------------------
  function renderStats(stats) {
    var state = $("state");
    state.dataset.state = stats.draining ? "draining" : "ready";
    setText(state, stats.draining ? "draining" : "ready");
    setText($("listen"), "SOCKS on " + stats.listen.join(" "));
    setText($("uptime"), "up " + duration((stats.time - stats.startedAt) / 1000));
    ["A", "B", "C", "D"].forEach(function (t) {
      var card = document.querySelector('.type[data-type="' + t + '"]');
      var c = stats.types[t];
      setText(card.querySelector('[data-field="active"]'), c.active);
      setText(card.querySelector('[data-field="total"]'), c.total);
      var up = card.querySelector('[data-field="up"]');
      var down = card.querySelector('[data-field="down"]');
      setText(up, bytes(c.bytesUp));
      setText(down, bytes(c.bytesDown));
      up.title = c.bytesUp + " bytes";
      down.title = c.bytesDown + " bytes";
    });
    setText($("sessions-total"), stats.sessions.total);
    setText($("sessions-active"), stats.sessions.active);
    setText($("sessions-rejected"), stats.sessions.rejected);
    setText($("auth-failures"), stats.authFailures);
    setText($("rule-denials"), stats.ruleDenials);
    setText($("dns-lookups"), stats.dns.lookups);
    setText($("dns-failures"), stats.dns.failures);
  }

  // --- sparkline --------------------------------------------------------------
  var rates = [];
  var last = null;
  function sample(stats) {
    var total = stats.bytes.up + stats.bytes.down;
    if (last && stats.time > last.time) {
      rates.push(Math.max(0, (total - last.total) / ((stats.time - last.time) / 1000)));
      if (rates.length > POINTS) rates.shift();
      $("sparkline").dataset.points = String(rates.length);
      setText($("rate"), bytes(Math.round(rates[rates.length - 1])) + "/s");
    }
    last = { time: stats.time, total: total };
    draw();
  }
  function draw() {
    var canvas = $("sparkline");
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
    if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (rates.length < 2) return;
    var max = Math.max.apply(null, rates) || 1;
    var step = w / (POINTS - 1);
    var x0 = w - (rates.length - 1) * step;
    var style = getComputedStyle(document.documentElement);
    ctx.beginPath();
    rates.forEach(function (r, i) {
      var x = x0 + i * step, y = h - 2 - (r / max) * (h - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = style.getPropertyValue("--accent").trim() || "#2563eb";
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.lineTo(w, h);
    ctx.lineTo(x0, h);
    ctx.closePath();
    ctx.globalAlpha = 0.15;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fill();
    ctx.globalAlpha = 1;
  }

  // --- sessions table ---------------------------------------------------------
  var FIELDS = ["id", "client", "user", "command", "destination", "resolved", "type", "phase",
    "bytesUp", "bytesDown", "ageSeconds"];
  var rows = new Map();
  function cellText(s, field) {
    var v = s[field];
    if (field === "bytesUp" || field === "bytesDown") return bytes(v);
    if (field === "ageSeconds") return duration(v);
    return v === null || v === undefined ? "-" : String(v);
  }
  function newRow(s) {
    var tr = document.createElement("tr");
    tr.dataset.sessionId = String(s.id);
    FIELDS.forEach(function (field) {
      var td = document.createElement("td");
      td.dataset.field = field;
      tr.appendChild(td);
    });
    var td = document.createElement("td");
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = "close";
    button.title = "close this session now";
    button.addEventListener("click", function () {
      button.disabled = true;
      request("api/v1/sessions/" + encodeURIComponent(s.id), "DELETE")
        .then(poll, function (e) { showError(e); button.disabled = false; });
    });
    td.appendChild(button);
    tr.appendChild(td);
    return tr;
  }
  function renderSessions(list) {
    var tbody = document.querySelector("#sessions tbody");
    var seen = new Set();
    list.sort(function (a, b) { return a.id - b.id; });
    list.forEach(function (s) {
      seen.add(s.id);
      var tr = rows.get(s.id);
      if (!tr) {
        tr = newRow(s);
        rows.set(s.id, tr);
      }
      tbody.appendChild(tr); // keeps the order by id
      FIELDS.forEach(function (field) {
        var td = tr.querySelector('[data-field="' + field + '"]');
        setText(td, cellText(s, field));
        if (field === "bytesUp" || field === "bytesDown") td.title = s[field] + " bytes";
        if (field === "destination" || field === "resolved") td.title = cellText(s, field);
      });
    });
    rows.forEach(function (tr, id) {
      if (!seen.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    });
    setText($("count"), list.length);
    $("empty").hidden = list.length > 0;
  }

  // --- polling ----------------------------------------------------------------
  function showError(e) {
    setText($("error"), e ? (e.message || String(e)) : "");
  }
  function showLogin(message) {
    var form = $("login");
    form.hidden = false;
    setText($("login-error"), message);
    var state = $("state");
    state.dataset.state = "error";
    setText(state, "token required");
  }
  $("login").addEventListener("submit", function (event) {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("login").hidden = true;
    poll();
  });

  var timer = null;
  var inFlight = false;
  function poll() {
    clearTimeout(timer);
    if (inFlight) return;
    inFlight = true;
    Promise.all([request("api/v1/stats"), request("api/v1/sessions")])
      .then(function (results) {
        $("login").hidden = true;
        renderStats(results[0]);
        sample(results[0]);
        renderSessions(results[1].sessions);
        showError(null);
        document.body.dataset.updated = String(results[0].time);
      })
      .catch(function (e) {
        if (e instanceof Unauthorized) {
          showLogin(e.message);
          return;
        }
        var state = $("state");
        state.dataset.state = "error";
        setText(state, "unreachable");
        showError(e);
      })
      .then(function () {
        inFlight = false;
        if ($("login").hidden) timer = setTimeout(poll, POLL_MS);
      });
  }
  poll();
})();
`;
