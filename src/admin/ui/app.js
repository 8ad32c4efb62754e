// The Portcullis dashboard: reads /ui/api/ with the admin token and draws
// what it gets. Every value goes into the page as text (textContent,
// createTextNode) because security events carry what clients sent.
"use strict";

(function () {
  const STORE_KEY = "portcullis-admin-token";
  const REFRESH_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const SHOWN = ["ts", "event", "route", "client_ip", "subject", "reason"];

  // The token lives in this variable, and in sessionStorage so that a
  // reload of the tab does not ask again; never in a cookie.
  let token = sessionStorage.getItem(STORE_KEY) || "";
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function fill(tableId, rows) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        if (cell instanceof Node) td.appendChild(cell);
        else td.textContent = cell === null || cell === undefined ? "" : String(cell);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = el("td", "none", "muted");
      td.colSpan = $(tableId).tHead.rows[0].cells.length;
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  class Refused extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch("/ui/api/" + path, {
      headers,
      credentials: "omit",
      cache: "no-store",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.message === "string" ? body.message : response.statusText;
      throw new Refused(response.status, message);
    }
    return body;
  }

  function showLogin(message) {
    if (timer !== null) clearInterval(timer);
    timer = null;
    $("dashboard").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("refusal").textContent = message;
    $("state").textContent = "not connected";
    $("token").focus();
  }

  function refusedMessage(err) {
    const what = token ? "the admin token" : "the request without an admin token";
    return "The admin API refused " + what + " (HTTP " + err.status + "): " + err.message;
  }

  async function refresh() {
    try {
      const filter = $("event-filter").value.trim();
      const [overview, listeners, certificates, routes, upstreams, charts, lockouts, events] =
        await Promise.all([
          api("overview"),
          api("listeners"),
          api("certificates"),
          api("routes"),
          api("upstreams"),
          api("charts"),
          api("lockouts"),
          api("events" + (filter ? "?event=" + encodeURIComponent(filter) : "")),
        ]);
      $("login").hidden = true;
      $("dashboard").hidden = false;
      $("forget").hidden = !token;
      drawOverview(overview);
      drawListeners(listeners);
      drawCertificates(certificates);
      drawRoutes(routes);
      drawUpstreams(upstreams);
      drawCharts(charts);
      drawLockouts(lockouts);
      drawEvents(events);
      $("state").textContent = "connected, refreshed " + new Date().toLocaleTimeString();
      if (timer === null) timer = setInterval(refresh, REFRESH_MS);
    } catch (err) {
      if (err instanceof Refused && (err.status === 401 || err.status === 403)) {
        sessionStorage.removeItem(STORE_KEY);
        showLogin(refusedMessage(err));
        token = "";
      } else {
        $("state").textContent = "refresh failed: " + (err && err.message ? err.message : String(err));
      }
    }
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + s + "s";
  }

  function drawOverview(o) {
    const list = $("overview-list");
    list.replaceChildren();
    const last = o.last_reload;
    const items = [
      ["Version", o.version],
      ["PID", o.pid],
      ["Uptime", duration(o.uptime_seconds)],
      ["Generation", o.generation],
      ["Config SHA-256", o.config_sha256],
      ["Loaded at", o.loaded_at],
      [
        "Last reload",
        last
          ? last.result === "ok"
            ? "ok at " + last.at + " (generation " + last.generation + ")"
            : "refused at " + last.at + " (" + last.errors + " errors)"
          : "none since start",
      ],
      ["Draining", o.draining ? "yes" : "no"],
    ];
    for (const [name, value] of items) {
      list.appendChild(el("dt", name));
      const dd = el("dd", value);
      if (name === "Last reload" && last && last.result !== "ok") dd.className = "bad";
      list.appendChild(dd);
    }
  }

  const yesNo = (v) => (v ? "yes" : "no");

  function drawListeners(list) {
    fill(
      "listeners",
      list.map((l) => [l.name, l.address, yesNo(l.tls), l.mtls, yesNo(l.http2)]),
    );
  }

  function drawCertificates(list) {
    fill(
      "certificates",
      list.map((c) => {
        const left = el("span", c.days_left, c.days_left < 0 ? "bad" : c.days_left < 14 ? "warn" : "good");
        return [c.listener, c.names.join(", "), c.subject, c.not_after, left];
      }),
    );
  }

  function drawRoutes(list) {
    fill(
      "routes",
      list.map((r) => {
        const ups = r.action === "respond"
          ? "(direct response)"
          : r.upstreams.map((u) => u.upstream + (r.upstreams.length > 1 ? " ×" + u.weight : "")).join(", ");
        const auth = r.public ? "public" : r.auth.map((a) => a.provider + " (" + a.kind + ")").join(", ");
        const z = r.authz;
        const authz = [
          z.require_scopes.length ? "scopes: " + z.require_scopes.join(" ") : "",
          z.allow_roles.length ? "roles: " + z.allow_roles.join(" ") : "",
          z.policy ? "policy" : "",
          z.external ? "external" : "",
        ].filter(Boolean).join("; ") || "none";
        const limit = r.rate_limit
          ? r.rate_limit.requests + " / " + r.rate_limit.window_seconds + " s (burst " + r.rate_limit.burst + ", per " + r.rate_limit.per + ")"
          : "none";
        const cache = r.cache ? r.cache.ttl_seconds + " s, " + r.cache.scope : "off";
        return [r.name, r.path, ups, auth, authz, limit, r.waf, cache];
      }),
    );
  }

  function drawUpstreams(list) {
    const rows = [];
    for (const u of list) {
      if (u.targets.length === 0) rows.push([u.name, "(no address yet)", "", "", ""]);
      for (const t of u.targets) {
        rows.push([
          u.name,
          t.target,
          t.name || "",
          el("span", t.healthy ? "healthy" : "unhealthy", t.healthy ? "good" : "bad"),
          el("span", t.ejected ? "ejected" : "no", t.ejected ? "bad" : "muted"),
        ]);
      }
      for (const n of u.names) {
        if (n.error) rows.push([u.name, "", n.name, el("span", "lookup failed: " + n.error, "bad"), ""]);
      }
    }
    fill("upstreams", rows);
  }

  function drawLockouts(data) {
    const s = data.failed_auth;
    $("lockout-settings").textContent = s
      ? "After " + s.threshold + " failed credentials within " + s.window_seconds + " s a client IP is blocked for " + s.block_seconds + " s. " + data.total + " blocked now."
      : "Lockout after failed credentials is not configured.";
    fill("lockouts", data.lockouts.map((l) => [l.client_ip, l.seconds_left]));
  }

  function drawEvents(data) {
    $("events-count").textContent =
      data.events.length + " shown (the newest " + data.capacity + " events are kept)";
    const names = $("event-names");
    const known = new Set(Array.from(names.options, (o) => o.value));
    fill(
      "events",
      data.events.map((e) => {
        if (typeof e.event === "string" && !known.has(e.event)) {
          known.add(e.event);
          const option = document.createElement("option");
          option.value = e.event;
          names.appendChild(option);
        }
        const details = Object.keys(e)
          .filter((k) => !SHOWN.includes(k) && e[k] !== null)
          .map((k) => k + "=" + (typeof e[k] === "string" ? e[k] : JSON.stringify(e[k])))
          .join(" ");
        return [e.ts, e.event, e.route, e.client_ip, e.subject, e.reason, details];
      }),
    );
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function chart(title, values, cls, unit) {
    const figure = el("figure", null, "chart");
    const numbers = values.map((v) => (v === null || v === undefined ? 0 : v));
    const max = Math.max(0, ...numbers);
    const width = numbers.length - 1 || 1;
    const height = 40;
    const box = svg("svg", { viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none", role: "img" });
    box.appendChild(svg("title", {})).textContent = title;
    const points = numbers
      .map((v, i) => i + "," + (height - (max > 0 ? (v / max) * (height - 2) : 0) - 1).toFixed(2))
      .join(" ");
    box.appendChild(svg("polyline", { points, class: cls, "vector-effect": "non-scaling-stroke" }));
    figure.appendChild(box);
    const last = numbers[numbers.length - 1] || 0;
    figure.appendChild(
      el("figcaption", title + ": now " + last.toFixed(2) + unit + ", max " + max.toFixed(2) + unit),
    );
    return figure;
  }

  function drawCharts(data) {
    const box = $("charts");
    box.replaceChildren();
    const seconds = data.bucket_seconds;
    for (const r of data.routes) {
      const row = el("div", null, "chart-row");
      row.appendChild(el("div", r.route, "name"));
      row.appendChild(chart("requests/s", r.requests.map((n) => n / seconds), "rate", ""));
      row.appendChild(
        chart(
          "5xx",
          r.server_errors.map((n, i) => (r.requests[i] ? (100 * n) / r.requests[i] : 0)),
          "errors",
          " %",
        ),
      );
      row.appendChild(chart("p99", r.p99_ms, "p99", " ms"));
      box.appendChild(row);
    }
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    if (token) sessionStorage.setItem(STORE_KEY, token);
    refresh();
  });

  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(STORE_KEY);
    token = "";
    showLogin("");
  });

  $("event-filter").addEventListener("change", refresh);

  refresh();
})();
