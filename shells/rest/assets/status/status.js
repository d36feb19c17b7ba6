// Lockgate's status page: polls the gateway's JSON endpoints and renders them.
//
// Every name on this page comes from configuration or from downstream servers,
// so nothing is ever parsed as HTML: elements are built with createElement and
// filled with textContent (no HTML strings, no inline handlers, no code from strings), which
// also lets the gateway serve the page under a strict Content-Security-Policy.
"use strict";

(function () {
  const POLL_MS = 2000;
  const TIMEOUT_MS = 5000;
  const KEY_STORAGE = "lockgate.status.apiKey";
  // The page is served at / and /status (maybe under a proxy's prefix):
  // the JSON endpoints sit beside whichever it was.
  const BASE = window.location.pathname.replace(/status\/?$/, "");

  const ENDPOINTS = {
    health: "gateway/health",
    stats: "gateway/stats",
    registry: "gateway/registry",
    audit: "gateway/audit?limit=20",
    ready: "ready",
  };
  // /ready answers 503 with a JSON body when the gateway is not ready: that is news, not a failure.
  const BODY_ON_ERROR = new Set(["ready"]);

  let polls = 0;
  let unreachableSince = null;
  let timer = null;

  // -- building elements ---------------------------------------------------------

  /** An element with attributes and children; strings become text nodes, never markup. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = String(value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  /** Replace a <dl>'s entries with [term, value] pairs, each pair in a <div> (one grid cell). */
  function fillFigures(list, pairs) {
    list.replaceChildren(
      ...pairs.map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value === null || value === undefined ? "–" : value))),
    );
  }

  // -- formatting ----------------------------------------------------------------

  function isNumber(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  function count(value) {
    return isNumber(value) ? value.toLocaleString("en") : "–";
  }

  function percent(fraction) {
    return isNumber(fraction) ? (fraction * 100).toFixed(fraction > 0 && fraction < 0.001 ? 3 : 1) + " %" : "–";
  }

  function ms(value) {
    return isNumber(value) ? value.toFixed(value < 10 ? 2 : 1) + " ms" : "–";
  }

  function duration(seconds) {
    if (!isNumber(seconds)) return "–";
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${s % 60} s`;
    return `${s} s`;
  }

  function clock(date) {
    return date.toLocaleTimeString("en-GB", { hour12: false });
  }

  /** An audit or reload timestamp (ISO string or epoch seconds) as local time, else as given. */
  function when(value) {
    if (value === null || value === undefined) return "–";
    const date = isNumber(value) ? new Date(value * 1000) : new Date(String(value));
    if (Number.isNaN(date.getTime())) return String(value);
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay ? clock(date) : date.toLocaleString("en-GB", { hour12: false });
  }

  function text(value) {
    return value === null || value === undefined || value === "" ? "–" : String(value);
  }

  function object(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : {};
  }

  // -- fetching ------------------------------------------------------------------

  function apiKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORAGE);
    } catch (_) {
      return null; // storage disabled: the page still works without authentication
    }
  }

  /** One endpoint: {ok, status, body} or {unreachable: true}. */
  async function get(name) {
    const headers = { Accept: "application/json" };
    const key = apiKey();
    if (key) headers.Authorization = "Bearer " + key;
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(BASE + ENDPOINTS[name], { headers, cache: "no-store", signal: abort.signal });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      return { ok: response.ok, status: response.status, body };
    } catch (_) {
      return { unreachable: true };
    } finally {
      clearTimeout(timeout);
    }
  }

  async function poll() {
    const names = Object.keys(ENDPOINTS);
    const answers = await Promise.all(names.map(get));
    const results = Object.fromEntries(names.map((name, i) => [name, answers[i]]));
    polls += 1;
    document.body.dataset.polls = String(polls);

    if (answers.every((a) => a.unreachable)) {
      showUnreachable();
      return;
    }
    unreachableSince = null;
    const unauthorized = answers.some((a) => a.status === 401);
    showAuth(unauthorized);

    const data = {};
    const problems = [];
    for (const name of names) {
      const answer = results[name];
      if (answer.unreachable) problems.push(`${ENDPOINTS[name]}: no answer`);
      else if (answer.ok || (BODY_ON_ERROR.has(name) && answer.body)) data[name] = object(answer.body);
      else if (answer.status !== 401) problems.push(`${ENDPOINTS[name]}: ${errorText(answer)}`);
    }
    byId("problems").textContent = problems.length ? "Not shown: " + problems.join("; ") : "";
    document.body.dataset.connection = unauthorized ? "unauthorized" : "ok";
    render(data, unauthorized);
    const now = new Date();
    const updated = el("time", { datetime: now.toISOString() }, clock(now));
    byId("connection").replaceChildren("Last updated ", updated);
    byId("connection").className = unauthorized ? "warn" : "";
  }

  function errorText(answer) {
    const error = object(object(answer.body).error);
    return `HTTP ${answer.status}` + (error.message ? ` (${error.message})` : "");
  }

  function showUnreachable() {
    unreachableSince = unreachableSince || new Date();
    document.body.dataset.connection = "unreachable";
    byId("connection").className = "bad";
    byId("overall").textContent = "unreachable";
    byId("overall").dataset.status = "unreachable";
    // The last figures stay, greyed out, so that what was known is still readable.
    byId("connection").replaceChildren(
      `The gateway does not answer (since ${clock(unreachableSince)}); still trying every ${POLL_MS / 1000} s.`,
    );
  }

  // -- authentication ------------------------------------------------------------

  function showAuth(needed) {
    const form = byId("auth");
    form.hidden = !needed;
    if (needed) {
      byId("auth-message").textContent = apiKey()
        ? "The gateway refused this API key. Enter another one."
        : "This gateway wants an API key to show its status.";
    }
  }

  function setUpAuth() {
    byId("auth").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = byId("auth-key").value.trim();
      if (!key) return;
      try {
        window.sessionStorage.setItem(KEY_STORAGE, key);
      } catch (_) {
        byId("auth-message").textContent = "This browser keeps no session storage, so the key cannot be kept.";
        return;
      }
      byId("auth-key").value = "";
      schedule(0);
    });
    byId("auth-forget").addEventListener("click", () => {
      try {
        window.sessionStorage.removeItem(KEY_STORAGE);
      } catch (_) {
        // nothing was kept
      }
      schedule(0);
    });
  }

  // -- rendering -----------------------------------------------------------------

  function render(data, unauthorized) {
    renderSummary(data.health, data.ready, data.stats, unauthorized);
    renderTraffic(data.stats);
    renderServers(data.health, data.registry, data.stats);
    renderAudit(data.audit);
    renderReload(data.stats);
  }

  function renderSummary(health, ready, stats, unauthorized) {
    const overall = byId("overall");
    const status = health ? text(health.status) : unauthorized ? "key needed" : "unknown";
    overall.textContent = status;
    overall.dataset.status = status;
    const uptime = health ? health.uptime_seconds : stats ? stats.uptime_seconds : undefined;
    const pairs = [
      ["Health", status],
      ["Ready", ready ? text(ready.status) + (ready.reason ? ` (${ready.reason})` : "") : "–"],
      ["Version", health ? text(health.version) : "–"],
      ["Uptime", duration(uptime)],
    ];
    fillFigures(byId("summary-list"), pairs);
    byId("summary").dataset.ready = ready ? text(ready.status) : "unknown";
  }

  function renderTraffic(stats) {
    if (!stats) {
      fillFigures(byId("traffic-list"), []);
      return;
    }
    const requests = object(stats.requests);
    const latency = object(stats.latency_ms);
    fillFigures(byId("traffic-list"), [
      ["Requests", count(requests.total)],
      ["Errors", count(requests.errors)],
      ["Error rate", percent(requests.error_rate)],
      ["Latency p50", ms(latency.p50)],
      ["Latency p95", ms(latency.p95)],
      ["Latency p99", ms(latency.p99)],
      ["Active sessions", count(object(stats.sessions).active)],
      ["Calls in flight", count(stats.calls_in_flight)],
    ]);
  }

  function renderServers(health, registry, stats) {
    const healthServers = object(health && health.servers);
    const registryServers = object(registry && registry.servers);
    const statsServers = object(stats && stats.servers);
    const checks = object(stats && object(stats.health_checker).instances);
    // Registry order is the configuration's; servers it does not know yet (or
    // all of them, when it did not answer) follow in the health answer's order.
    const names = [...Object.keys(registryServers)];
    for (const name of Object.keys(healthServers)) if (!names.includes(name)) names.push(name);

    byId("servers-empty").hidden = names.length > 0;
    byId("servers").replaceChildren(
      ...names.map((name) =>
        serverCard(name, object(healthServers[name]), object(registryServers[name]), object(statsServers[name]), checks),
      ),
    );
  }

  function serverCard(name, health, registry, stats, checks) {
    const state = text(health.state || registry.state);
    const latency = object(stats.latency_ms);
    const total = health.total_instances;
    const healthy = health.healthy_instances;
    const heading = el(
      "h3",
      {},
      el("span", { class: "server-name" }, name),
      " ",
      el("span", { class: `badge state-${cssWord(state)}` }, state),
      isNumber(total) ? el("span", { class: "muted" }, ` ${healthy} of ${total} instances healthy`) : null,
    );
    const facts = el(
      "p",
      { class: "server-facts" },
      [
        registry.description ? registry.description : null,
        registry.strategy ? `strategy ${registry.strategy}` : null,
        registry.source ? `from ${registry.source}` : null,
        `${count(stats.requests)} ${stats.requests === 1 ? "request" : "requests"}`,
        `${percent(stats.error_rate)} errors`,
        `p50 ${ms(latency.p50)}, p95 ${ms(latency.p95)}, p99 ${ms(latency.p99)}`,
      ]
        .filter((part) => part !== null)
        .join(" · "),
    );
    const instances = Array.isArray(registry.instances) ? registry.instances : [];
    const load = object(stats.load_distribution);
    const table = instances.length
      ? el(
          "table",
          { class: "instances" },
          el(
            "thead",
            {},
            el("tr", {}, ...["Instance", "State", "Health", "Breaker", "Transport", "Weight", "Calls", "In flight", "Share", "Last error"].map((h) => el("th", {}, h))),
          ),
          el("tbody", {}, ...instances.map((instance) => instanceRow(name, object(instance), load, checks))),
        )
      : null;
    return el("article", { class: "server", "data-server": name, "data-state": state }, heading, facts, table);
  }

  function instanceRow(server, instance, load, checks) {
    const id = text(instance.id);
    const check = object(checks[`${server}/${id}`]);
    const share = object(load[id]);
    const healthy = instance.healthy === undefined ? check.healthy : instance.healthy;
    const state = text(instance.state);
    // Idle and starting instances are neither up nor down yet.
    const look = healthy === false ? "down" : state === "ready" ? "up" : "pending";
    const where = instance.endpoint || [instance.command, ...(Array.isArray(instance.args) ? instance.args : [])].filter(Boolean).join(" ");
    return el(
      "tr",
      {
        class: `instance ${look}`,
        "data-server": server,
        "data-instance": id,
        "data-state": state,
        "data-healthy": healthy === undefined ? "unknown" : String(Boolean(healthy)),
      },
      el("td", { title: where || null }, id),
      el("td", {}, el("span", { class: `dot state-${cssWord(state)}`, "aria-hidden": "true" }), " ", state),
      el("td", { class: healthy === false ? "bad" : null }, healthy === undefined ? "–" : healthy ? "healthy" : "unhealthy"),
      el("td", {}, text(check.breaker)),
      el("td", {}, text(instance.transport)),
      el("td", {}, text(instance.weight)),
      el("td", {}, count(share.calls)),
      el("td", {}, count(share.in_flight)),
      el("td", {}, percent(share.share)),
      el("td", { class: check.last_error ? "error-text" : null }, text(check.last_error)),
    );
  }

  /** A state word as a class name part: anything but letters, digits and _ becomes -. */
  function cssWord(word) {
    return String(word).toLowerCase().replace(/[^a-z0-9_]/g, "-");
  }

  function renderAudit(audit) {
    const records = audit && Array.isArray(audit.records) ? audit.records : [];
    byId("audit-empty").hidden = records.length > 0;
    // Only these fields are shown: records never carry argument values, and
    // the page would not show them if one did.
    const rows = records.map((raw) => {
      const r = object(raw);
      const decision = text(r.decision);
      return el(
        "tr",
        { "data-decision": decision },
        el("td", {}, when(r.time)),
        el("td", {}, text(r.agent)),
        el("td", {}, text(r.operation)),
        el("td", {}, text(r.server)),
        el("td", {}, text(r.tool)),
        el("td", { class: `decision decision-${cssWord(decision)}` }, decision),
        el("td", { class: "rule" }, text(r.rule)),
      );
    });
    byId("audit").querySelector("tbody").replaceChildren(...rows);
  }

  function renderReload(stats) {
    const reload = object(stats && stats.reload);
    const list = byId("reload-list");
    if (!stats || !Object.keys(reload).length) {
      fillFigures(list, [["Reloads", "–"]]);
      byId("reload-problems").replaceChildren();
      return;
    }
    const draining = Array.isArray(reload.draining) ? reload.draining : [];
    fillFigures(list, [
      ["Attempts", count(reload.attempts)],
      ["Succeeded", count(reload.successes)],
      ["Refused", count(reload.failures)],
      ["Last result", text(reload.last_result)],
      ["Last attempt", when(reload.last_attempt)],
      ["Draining", draining.length ? draining.join(", ") : "none"],
    ]);
    const lastError = object(reload.last_error);
    const problems = Array.isArray(lastError.problems) ? lastError.problems : [];
    byId("reload-problems").replaceChildren(
      ...problems.map((p) => {
        const problem = object(p);
        const where = [problem.file, problem.path].filter(Boolean).join(": ");
        return el("li", {}, `Refused at ${when(lastError.time)}: ${where ? where + ": " : ""}${text(problem.message)}`);
      }),
    );
  }

  // -- the loop ------------------------------------------------------------------

  /** Poll after `delay` ms; one poll at a time, so a slow gateway is never asked twice at once. */
  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      timer = null;
      try {
        await poll();
      } catch (error) {
        // A rendering bug must not stop the page from trying again.
        byId("problems").textContent = "The page failed to render: " + String(error);
      }
      if (timer === null) schedule(POLL_MS);
    }, delay);
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpAuth();
    schedule(0);
  });
})();
