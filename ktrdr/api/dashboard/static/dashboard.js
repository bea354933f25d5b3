// The ktrdr dashboard: polls the backend and redraws the fleet, the operations and one
// operation, without reloading the page.
//
// Reads: GET /ui/api/fleet and the operator API (/api/v1/operations...), authenticated by
// the session cookie. Writes (submit, cancel, resume) carry the session's CSRF token from
// the page's <meta name="ktrdr-csrf">. Every value is inserted as text (textContent),
// never as markup.

import { renderCharts } from "./chart.js";

const POLL_MS = 1000;
const SERIES_POLL_MS = 2000;
const PAGE_SIZE = 25;
// The operations list counts up to 10,000 matches (total is null above) and accepts
// offsets up to 10,000 (deeper pages need its cursor).
const MAX_OFFSET = 10000;
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const DEFAULT_PARAMETERS = {
  training: { epochs: 300, bars: 2000, seed: 1 },
  backtest: { bars: 5000, seed: 1 },
};
const csrf = document.querySelector('meta[name="ktrdr-csrf"]')?.content ?? "";

class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }
}

function describe(status, body) {
  if (body && typeof body === "object") {
    const { detail } = body;
    if (Array.isArray(detail)) {
      return detail
        .map((item) => `${(item.loc || []).slice(1).join(".") || "body"}: ${item.msg}`)
        .join("; ");
    }
    if (typeof detail === "string") return detail;
    if (body.error) return String(body.error);
  }
  return `HTTP ${status}`;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (response.status === 401) {
    window.location.assign("/ui/login");
    throw new ApiError(401, null);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// --- small DOM helpers ---------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function operationLink(id, text) {
  return el("a", { href: `/ui/operations/${encodeURIComponent(id)}`, text: text ?? id.slice(0, 12) });
}

function statusBadge(status) {
  return el("span", { class: `status status-${status}`, text: status });
}

function percentOf(progress, status) {
  if (status === "completed") return 100;
  const value = Number(progress?.percent ?? 0);
  return Number.isFinite(value) ? Math.max(0, Math.min(100, value)) : 0;
}

function progressBar(progress, status) {
  const percent = percentOf(progress, status);
  const fill = el("div", { class: "fill" });
  fill.style.width = `${percent}%`;
  return el(
    "div",
    { class: `progress progress-${status}`, dataset: { percent: percent.toFixed(1) } },
    el("div", { class: "bar" }, fill),
    el("span", { class: "percent", text: `${percent.toFixed(1)}%` }),
  );
}

function age(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 10) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function scalar(value) {
  if (typeof value === "number" && !Number.isInteger(value)) return value.toPrecision(6);
  return String(value);
}

function setLive(ok, reason) {
  const live = document.getElementById("live");
  if (!live) return;
  live.className = ok ? "live ok" : "live down";
  live.textContent = ok ? `live · ${new Date().toLocaleTimeString()}` : `offline: ${reason}`;
}

function poll(refresh, intervalMs) {
  let busy = false;
  const tick = async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      await refresh();
      setLive(true);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) setLive(false, error.message);
    } finally {
      busy = false;
    }
  };
  document.addEventListener("visibilitychange", tick);
  tick();
  return { tick, timer: setInterval(tick, intervalMs) };
}

function wireLogout() {
  document.getElementById("logout")?.addEventListener("click", async () => {
    try {
      await api("POST", "/ui/logout");
    } finally {
      window.location.assign("/ui/login");
    }
  });
}

// --- the fleet page ------------------------------------------------------------------

function workerRow(worker) {
  const operation = worker.operation;
  const config = el("span", { class: "mono", text: String(worker.config_fingerprint).slice(0, 12) });
  const drift = worker.fingerprint_drift
    ? el("span", {
        class: "drift",
        text: "drift",
        title: "runs another configuration than the other workers of its type",
      })
    : null;
  const current = operation
    ? el("div", { class: "current" }, operationLink(operation.id), progressBar(operation.progress, operation.status))
    : el("span", { class: "muted", text: worker.current_operation_id ? worker.current_operation_id : "–" });
  return el(
    "tr",
    { dataset: { workerId: worker.worker_id, status: worker.status } },
    el("td", { class: "mono", title: worker.endpoint_url, text: worker.worker_id }),
    el("td", { text: worker.worker_type }),
    el("td", {}, statusBadge(worker.status)),
    el("td", { class: "age", text: age(worker.heartbeat_age_s) }),
    el("td", {}, config, drift),
    el("td", {}, current),
  );
}

function operationRow(operation) {
  return el(
    "tr",
    { dataset: { operationId: operation.id, status: operation.status } },
    el("td", { class: "mono" }, operationLink(operation.id)),
    el("td", { text: operation.type }),
    el("td", {}, statusBadge(operation.status)),
    el("td", { class: "progress-cell" }, progressBar(operation.progress, operation.status)),
    el("td", { class: "attempt", text: operation.attempt ?? "–" }),
    el("td", { class: "mono", text: operation.worker_id ?? "–" }),
    el("td", { text: when(operation.created_at) }),
  );
}

function fleetPage() {
  const state = { status: "", type: "", offset: 0 };
  const workers = document.querySelector("#workers tbody");
  const operations = document.querySelector("#operations-table tbody");
  const typeSelect = document.getElementById("submit-type");
  const parameters = document.getElementById("submit-params");
  const submitResult = document.getElementById("submit-result");
  const defaults = (type) => JSON.stringify(DEFAULT_PARAMETERS[type] ?? {});
  parameters.value = defaults(typeSelect.value);

  async function refresh() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(state.offset) });
    if (state.status) query.set("status", state.status);
    if (state.type) query.set("type", state.type);
    const [fleet, page] = await Promise.all([
      api("GET", "/ui/api/fleet"),
      api("GET", `/api/v1/operations?${query}`),
    ]);
    workers.replaceChildren(...fleet.workers.map(workerRow));
    document.getElementById("workers-empty").hidden = fleet.workers.length > 0;
    const shown = fleet.workers.length;
    document.getElementById("workers-count").textContent =
      shown < fleet.total ? `(first ${shown} of ${fleet.total}, by id)` : `(${fleet.total})`;
    operations.replaceChildren(...page.items.map(operationRow));
    document.getElementById("operations-empty").hidden = page.items.length > 0;
    const total = page.total ?? `more than ${MAX_OFFSET.toLocaleString("en")}`;
    document.getElementById("operations-count").textContent = `(${total})`;
    const first = page.items.length ? state.offset + 1 : 0;
    document.getElementById("page-range").textContent =
      `${first}–${state.offset + page.items.length} of ${total}`;
    document.getElementById("page-newer").disabled = state.offset === 0;
    document.getElementById("page-older").disabled =
      page.next_cursor === null || state.offset + PAGE_SIZE > MAX_OFFSET;
  }

  const poller = poll(refresh, POLL_MS);
  const refilter = () => {
    state.status = document.getElementById("filter-status").value;
    state.type = document.getElementById("filter-type").value;
    state.offset = 0;
    poller.tick();
  };
  document.getElementById("filter-status").addEventListener("change", refilter);
  document.getElementById("filter-type").addEventListener("change", refilter);
  document.getElementById("page-newer").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    poller.tick();
  });
  document.getElementById("page-older").addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    poller.tick();
  });

  let previousType = typeSelect.value;
  typeSelect.addEventListener("change", () => {
    if (parameters.value.trim() === defaults(previousType) || !parameters.value.trim()) {
      parameters.value = defaults(typeSelect.value);
    }
    previousType = typeSelect.value;
  });

  document.getElementById("submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    submitResult.className = "message";
    let values;
    try {
      values = parameters.value.trim() ? JSON.parse(parameters.value) : {};
    } catch (error) {
      submitResult.className = "message error";
      submitResult.textContent = `Parameters are not JSON: ${error.message}`;
      return;
    }
    if (values === null || typeof values !== "object" || Array.isArray(values)) {
      submitResult.className = "message error";
      submitResult.textContent = 'Parameters must be a JSON object, e.g. {"epochs": 100}';
      return;
    }
    try {
      const created = await api("POST", "/api/v1/operations", { type: typeSelect.value, parameters: values });
      submitResult.replaceChildren(`Submitted ${created.type} `, operationLink(created.id, created.id), ".");
      submitResult.dataset.operationId = created.id;
      poller.tick();
    } catch (error) {
      submitResult.className = "message error";
      submitResult.textContent = `Not submitted: ${error.message}`;
    }
  });
}

// --- one operation's page ------------------------------------------------------------

function keyValueRows(tbody, entries) {
  tbody.replaceChildren(
    ...entries.map(([key, value]) =>
      el("tr", {}, el("th", { scope: "row", text: key }), el("td", { class: "mono", text: scalar(value) })),
    ),
  );
}

function summaryRows(operation) {
  const rows = [
    ["Type", operation.type],
    ["Worker", operation.worker_id ?? "–"],
  ];
  if (operation.attempt !== undefined && operation.attempt !== null) rows.push(["Attempt", operation.attempt]);
  if (operation.trace_id) rows.push(["Trace id", operation.trace_id]);
  rows.push(
    ["Created", when(operation.created_at)],
    ["Started", when(operation.started_at)],
    ["Finished", when(operation.finished_at)],
    ["Last report", when(operation.last_reported_at)],
  );
  if (operation.resume) rows.push(["Resumes", "from its checkpoint"]);
  return rows.flatMap(([key, value]) => [
    el("dt", { text: key }),
    el("dd", { class: key === "Trace id" ? "mono trace-id" : key === "Attempt" ? "attempt" : "", text: String(value) }),
  ]);
}

function operationPage(operationId) {
  const path = `/api/v1/operations/${encodeURIComponent(operationId)}`;
  const charts = document.getElementById("charts");
  const actionResult = document.getElementById("action-result");
  let status = null;
  let lastSeries = 0;
  let seriesAfterFinish = false;
  let poller = null;

  async function refreshSeries(finished) {
    const now = Date.now();
    if (finished ? seriesAfterFinish : now - lastSeries < SERIES_POLL_MS) return;
    lastSeries = now;
    const series = await api("GET", `${path}/series`);
    renderCharts(charts, series);
    if (finished) seriesAfterFinish = true;
  }

  async function refresh() {
    let operation;
    try {
      operation = await api("GET", path);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        const missing = document.getElementById("operation-missing");
        missing.hidden = false;
        missing.textContent = `No operation with id ${operationId}.`;
        clearInterval(poller.timer);
        return;
      }
      throw error;
    }
    status = operation.status;
    document.getElementById("operation-status").replaceChildren(statusBadge(status));
    const live = !FINISHED.has(status);
    const message = live && operation.progress?.message ? ` ${operation.progress.message}` : "";
    document
      .getElementById("operation-progress")
      .replaceChildren(progressBar(operation.progress, status), el("span", { class: "muted", text: message }));
    document.getElementById("operation-summary").replaceChildren(...summaryRows(operation));
    document.getElementById("cancel").disabled = FINISHED.has(status);
    document.getElementById("resume").disabled = !(status === "failed" || status === "cancelled");

    const errorSection = document.getElementById("error-section");
    errorSection.hidden = !operation.error;
    document.getElementById("operation-error").textContent = operation.error ?? "";

    keyValueRows(document.querySelector("#parameters tbody"), Object.entries(operation.parameters ?? {}));
    const result = operation.result ?? null;
    document.getElementById("result-section").hidden = result === null;
    if (result !== null) {
      const flat = Object.entries(result).filter(([, v]) => v === null || typeof v !== "object");
      const nested = Object.entries(result).filter(([, v]) => v !== null && typeof v === "object");
      keyValueRows(document.querySelector("#result tbody"), flat);
      document.getElementById("result-nested").replaceChildren(
        ...nested.map(([key, value]) =>
          el("details", {}, el("summary", { text: key }), el("pre", { class: "mono", text: JSON.stringify(value, null, 2) })),
        ),
      );
    }
    await refreshSeries(FINISHED.has(status));
  }

  poller = poll(refresh, POLL_MS);
  const act = (action) => async () => {
    actionResult.className = "message";
    try {
      const view = await api("POST", `${path}/${action}`);
      actionResult.textContent = `${action}: now ${view.status}`;
      seriesAfterFinish = false;
      poller.tick();
    } catch (error) {
      actionResult.className = "message error";
      actionResult.textContent = `${action} refused: ${error.message}`;
    }
  };
  document.getElementById("cancel").addEventListener("click", act("cancel"));
  document.getElementById("resume").addEventListener("click", act("resume"));
}

wireLogout();
if (document.body.dataset.page === "fleet") fleetPage();
if (document.body.dataset.page === "operation") operationPage(document.body.dataset.operationId);
