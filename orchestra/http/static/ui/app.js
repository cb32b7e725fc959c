// The status page: what the box is doing now, built on the JS SDK (/sdk/orchestra.js).
//
// Every POLL_MS it reads the models, the replica sets and the task list; each running task's
// text comes live from its v1 stream through an EventSource (which resumes by itself with
// Last-Event-ID after a dropped connection; `watch=true`, so the page never counts as the
// task's reader). The token, when one is needed, is asked once and kept in this tab's
// session storage, and in the cookie the stream route accepts (EventSource sends no header).
// Everything the server says is put in the page as text, never as HTML.

import { Client, ServerError } from "/sdk/orchestra.js";
import { LineChart } from "/ui/charts.js";

const TOKEN_KEY = "orchestra.token";
const POLL_MS = 1000;
const OFFLINE_POLL_MS = 3000;
const ERRORS_SHOWN = 10;
const ENDED_LINGER_MS = 4000;

const $ = (id) => document.getElementById(id);

const page = {
  client: null,
  timer: null,
  lastTotal: null, // {tokens, at}: for tokens/s
  streams: new Map(), // task id -> LiveTask
  busy: new Set(), // actions in flight, by key (buttons stay disabled)
  rows: new Map(), // waiting task id -> its row
  cards: new Map(), // pool id -> {signature, node}
  tokensChart: null,
  ttftChart: null,
};

// -- small helpers ---------------------------------------------------------------------------

function element(tag, { className, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, value);
  for (const child of children) if (child) node.append(child);
  return node;
}

/** Make `container`'s children `nodes`, in order, moving only those out of place (a node
 * left where it is keeps its scroll position, its focus and a click in progress). */
function syncChildren(container, nodes) {
  nodes.forEach((node, i) => {
    if (container.children[i] !== node) container.insertBefore(node, container.children[i] ?? null);
  });
  while (container.children.length > nodes.length) container.lastElementChild.remove();
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function shortId(taskId) {
  return taskId.length > 12 ? `${taskId.slice(0, 8)}…` : taskId;
}

function setConnection(state, text) {
  const pill = $("connection");
  pill.dataset.state = state;
  pill.textContent = text;
}

function showActionError(error) {
  $("action-error").textContent = error ? `${error.code ?? "error"}: ${error.message}` : "";
}

/** Run an operator's action once at a time per key; the page refreshes after it. */
async function act(key, action) {
  if (page.busy.has(key)) return;
  page.busy.add(key);
  showActionError(null);
  schedule(0);
  try {
    await action();
  } catch (error) {
    if (!handleAuth(error)) showActionError(error);
  } finally {
    page.busy.delete(key);
    schedule(0);
  }
}

function button(label, key, action, { danger = false } = {}) {
  const node = element("button", { text: page.busy.has(key) ? `${label}…` : label, attrs: { type: "button", "data-action": key } });
  if (danger) node.classList.add("danger");
  node.disabled = page.busy.has(key);
  node.addEventListener("click", () => act(key, action));
  return node;
}

// -- the token ---------------------------------------------------------------------------------

function makeClient() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  page.client = new Client({ token, timeoutMs: 15000 });
  page.client.useStreamCookie();
  $("forget-token").hidden = !token;
}

function askToken(message) {
  stopPolling();
  $("status").hidden = true;
  $("token-form").hidden = false;
  $("token-error").textContent = message ?? "";
  setConnection("locked", "token needed");
  $("token-input").focus();
}

/** A 401 or 403 asks for the token again; true when it was one. */
function handleAuth(error) {
  if (!(error instanceof ServerError) || (error.status !== 401 && error.status !== 403)) return false;
  const had = sessionStorage.getItem(TOKEN_KEY);
  if (had) sessionStorage.removeItem(TOKEN_KEY);
  makeClient();
  for (const live of page.streams.values()) live.close();
  page.streams.clear();
  askToken(had ? "That token was refused." : null);
  return true;
}

// -- running tasks: their live text ------------------------------------------------------------

/** One running task's card and its EventSource. */
class LiveTask {
  constructor(task) {
    this.id = task.task_id;
    this.lastId = -1;
    this.tokens = 0;
    this.gaps = 0;
    this.ended = null; // the end or error event's data, once it came
    this.endedAt = null;
    this.text = element("pre", { className: "text", attrs: { "aria-live": "off" } });
    this.meta = element("div", { className: "meta" });
    this.progress = element("progress", { attrs: { max: String(task.max_tokens || 1), value: "0" } });
    this.actions = element("div", { className: "actions" });
    this.node = element("article", { className: "card task", attrs: { "data-task-id": this.id, "data-stream": "opening" } }, [
      element("header", {}, [element("code", { text: shortId(this.id), attrs: { title: this.id } }), this.meta]),
      this.progress,
      this.text,
      this.actions,
    ]);
    this.open();
  }

  open() {
    const source = new EventSource(`${page.client.streamUrl(this.id)}?watch=true`);
    this.source = source;
    source.addEventListener("open", () => this.mark("live"));
    source.addEventListener("token", (event) => this.token(event));
    source.addEventListener("end", (event) => this.finish(event, "ended"));
    source.addEventListener("error", (event) => {
      if (event.data !== undefined) {
        this.finish(event, "failed"); // the task's own error event
      } else if (source.readyState === EventSource.CONNECTING) {
        this.mark("reconnecting"); // the connection dropped: EventSource comes back by itself
      } else {
        this.mark("closed"); // refused for good (the task is forgotten, or the token)
      }
    });
  }

  mark(state) {
    if (this.ended && state !== "ended" && state !== "failed") return;
    this.node.dataset.stream = state;
  }

  token(event) {
    const id = Number(event.lastEventId);
    if (Number.isFinite(id) && id <= this.lastId) return; // never shown twice
    this.lastId = Number.isFinite(id) ? id : this.lastId;
    const data = JSON.parse(event.data);
    if (data.i !== this.tokens) this.gaps += 1; // a token lost in between
    this.tokens = data.i + 1;
    this.text.textContent += data.t;
    this.text.scrollTop = this.text.scrollHeight;
    this.node.dataset.tokens = String(this.tokens);
    this.node.dataset.gaps = String(this.gaps);
    this.progress.value = this.tokens;
    this.mark("live");
  }

  finish(event, state) {
    this.ended = JSON.parse(event.data);
    this.endedAt = performance.now();
    this.source.close();
    this.mark(state);
    this.node.dataset.outcome = this.ended.code ?? "completed";
  }

  /** Refresh its figures from the task list (`task`: its entry, or null once not listed). */
  update(task) {
    if (task) {
      const figures = [task.pool, task.priority, `${task.tokens_out}/${task.max_tokens} tokens`, duration(task.run_ms)];
      if (task.replica) figures.push(task.replica);
      this.meta.textContent = figures.join(" · ");
      this.progress.max = task.max_tokens || 1;
      this.actions.replaceChildren(button("Cancel", `cancel:${this.id}`, () => page.client.cancel(this.id), { danger: true }));
    } else {
      const outcome = this.ended ? (this.ended.code ?? "completed") : "ended";
      this.actions.replaceChildren(element("span", { className: "muted", text: outcome }));
    }
  }

  get gone() {
    return this.ended !== null && performance.now() - this.endedAt > ENDED_LINGER_MS;
  }

  close() {
    this.source.close();
  }
}

function renderRunning(running) {
  const listed = new Map(running.map((task) => [task.task_id, task]));
  for (const task of running) {
    if (!page.streams.has(task.task_id)) page.streams.set(task.task_id, new LiveTask(task));
  }
  for (const [id, live] of page.streams) {
    live.update(listed.get(id) ?? null);
    if (!listed.has(id) && (live.gone || live.node.dataset.stream === "closed")) {
      live.close();
      page.streams.delete(id);
    }
  }
  syncChildren($("running"), [...page.streams.values()].map((live) => live.node));
  $("running-count").textContent = String(running.length);
  $("running-empty").hidden = page.streams.size > 0;
}

// -- the rest of the page ----------------------------------------------------------------------

/** One waiting task's row, kept from one refresh to the next (its cells updated). */
function waitingRow(task) {
  let row = page.rows.get(task.task_id);
  if (!row) {
    const cells = Array.from({ length: 6 }, () => element("td"));
    cells[1].append(element("code", { text: shortId(task.task_id), attrs: { title: task.task_id } }));
    const cancel = button("Cancel", `cancel:${task.task_id}`, () => page.client.cancel(task.task_id), { danger: true });
    row = { node: element("tr", { attrs: { "data-task-id": task.task_id } }, [...cells, element("td", {}, [cancel])]), cells, cancel };
    page.rows.set(task.task_id, row);
  }
  const [position, , pool, priority, waited, starts] = row.cells;
  position.textContent = String(task.queue_position);
  pool.textContent = task.pool;
  priority.textContent = task.priority;
  waited.textContent = duration(task.age_ms);
  starts.textContent = duration(task.predicted_start_ms);
  const busy = page.busy.has(`cancel:${task.task_id}`);
  row.cancel.disabled = busy;
  row.cancel.textContent = busy ? "Cancel…" : "Cancel";
  return row.node;
}

function renderWaiting(waiting) {
  const listed = new Set(waiting.map((task) => task.task_id));
  for (const id of page.rows.keys()) if (!listed.has(id)) page.rows.delete(id);
  syncChildren($("waiting").tBodies[0], waiting.map(waitingRow));
  $("waiting-count").textContent = String(waiting.length);
  $("waiting-empty").hidden = waiting.length > 0;
  $("waiting").hidden = waiting.length === 0;
}

function renderErrors(failed) {
  const items = failed.slice(0, ERRORS_SHOWN).map((task) =>
    element("li", { attrs: { "data-task-id": task.task_id } }, [
      element("strong", { text: task.error_code ?? "failed" }),
      element("span", { text: ` ${task.error_message ?? ""}` }),
      element("div", { className: "muted", text: `${shortId(task.task_id)} · ${task.pool} · ${duration(task.ended_ms_ago)} ago` }),
    ]),
  );
  $("errors").replaceChildren(...items);
  $("errors-empty").hidden = items.length > 0;
}

function poolCard(set, served, waiting) {
  const draining = set.state === "draining";
  const slotsBusy = set.replicas.reduce((sum, r) => sum + r.slots_busy, 0);
  const slotsTotal = set.replicas.reduce((sum, r) => sum + r.slots_total, 0);
  const lines = served.map((model) => {
    const facts = [model.residency ?? (model.loaded ? "loaded" : "unloaded")];
    if (model.memory_mb) facts.push(`${model.memory_mb} MB`);
    if (model.context) facts.push(`ctx ${model.context}`);
    const actions = [];
    const loaded = model.residency === "loaded" || model.loaded;
    if (!loaded && model.residency !== "loading") {
      actions.push(button("Load", `load:${model.id}`, () => page.client.loadModel(model.id)));
    } else if (loaded && !model.keep_loaded) {
      actions.push(button("Unload", `unload:${model.id}`, () => page.client.unloadModel(model.id)));
    }
    return element("div", { className: "model", attrs: { "data-model-id": model.id } }, [
      element("strong", { text: model.id }),
      element("span", { className: "muted", text: ` ${facts.join(" · ")}` }),
      ...actions,
    ]);
  });
  const replicas = set.replicas.map((r) =>
    element("li", { attrs: { "data-replica-id": r.id, "data-state": r.state } }, [
      element("code", { text: r.id }),
      element("span", { text: ` ${r.state} · ${r.slots_busy}/${r.slots_total} slots` }),
      element("span", { className: "muted", text: r.restarts ? ` · ${r.restarts} restarts` : "" }),
    ]),
  );
  const slo = set.slo;
  const speed = [
    `TTFT p50 ${slo.ttft_ms_p50 === null ? "–" : duration(slo.ttft_ms_p50)}`,
    `p95 ${slo.ttft_ms_p95 === null ? "–" : duration(slo.ttft_ms_p95)}`,
    `${slo.tokens_per_s === null ? "–" : slo.tokens_per_s.toFixed(1)} tok/s per stream`,
  ];
  const control = draining
    ? button("Resume", `resume:${set.id}`, () => page.client.resume(set.id))
    : button("Drain", `drain:${set.id}`, () => page.client.drain(set.id));
  return element("article", { className: "card pool", attrs: { "data-pool-id": set.id, "data-state": set.state } }, [
    element("header", {}, [
      element("h3", { text: set.id }),
      element("span", { className: "pill", text: set.state, attrs: { "data-state": set.state } }),
    ]),
    ...lines,
    element("div", { className: "figures" }, [
      element("span", { text: `${slotsBusy}/${slotsTotal} slots busy` }),
      element("span", { text: `${waiting} waiting` }),
    ]),
    element("ul", { className: "replicas" }, replicas),
    element("div", { className: "muted", text: speed.join(" · ") }),
    element("div", { className: "actions" }, [control]),
  ]);
}

function renderPools(sets, models, waitingTasks) {
  const cards = sets.map((set) => {
    const served = models.filter((m) => m.pool === set.id);
    const waiting = waitingTasks.filter((t) => t.pool === set.id).length;
    // A card is drawn again only when something it shows changed.
    const signature = JSON.stringify([set, served, waiting, [...page.busy]]);
    const kept = page.cards.get(set.id);
    if (kept && kept.signature === signature) return kept.node;
    const node = poolCard(set, served, waiting);
    page.cards.set(set.id, { signature, node });
    return node;
  });
  const listed = new Set(sets.map((set) => set.id));
  for (const id of page.cards.keys()) if (!listed.has(id)) page.cards.delete(id);
  syncChildren($("pools"), cards);
}

function renderCharts(sets) {
  const now = performance.now();
  const total = sets.reduce((sum, s) => sum + (s.tokens_out_total ?? 0), 0);
  let rate = null;
  if (page.lastTotal !== null && now > page.lastTotal.at) {
    rate = Math.max(0, ((total - page.lastTotal.tokens) * 1000) / (now - page.lastTotal.at));
  }
  page.lastTotal = { tokens: total, at: now };
  const p95s = sets.map((s) => s.slo.ttft_ms_p95).filter((v) => v !== null);
  const p95 = p95s.length ? Math.max(...p95s) : null;
  if (rate !== null) page.tokensChart.push(rate);
  page.ttftChart.push(p95);
  $("tokens-rate").textContent = rate === null ? "–" : rate.toFixed(1);
  $("ttft-p95").textContent = p95 === null ? "–" : duration(p95);
}

// -- polling -------------------------------------------------------------------------------

function stopPolling() {
  clearTimeout(page.timer);
  page.timer = null;
}

function schedule(ms, next = refresh) {
  clearTimeout(page.timer);
  page.timer = setTimeout(next, ms);
}

async function refresh() {
  const client = page.client;
  try {
    const [models, sets, live, failed] = await Promise.all([
      client.models(),
      client.replicaSets(),
      client.tasks({ state: ["running", "queued"] }),
      client.tasks({ state: "failed", limit: ERRORS_SHOWN }),
    ]);
    const running = live.filter((t) => t.state === "running");
    const waiting = live.filter((t) => t.state === "queued");
    renderPools(sets, models, waiting);
    renderRunning(running);
    renderWaiting(waiting);
    renderErrors(failed);
    renderCharts(sets);
    setConnection("live", "live");
    schedule(POLL_MS);
  } catch (error) {
    if (handleAuth(error)) return;
    setConnection("offline", `offline: ${error.message}`);
    schedule(OFFLINE_POLL_MS);
  }
}

/** Whether this orchestra wants the token (GET /health says, open): asked before any
 * request is refused. */
async function tokenRequired() {
  const response = await fetch(`${page.client.baseUrl}/health`, { cache: "no-store" });
  const health = await response.json();
  return health.token === "required";
}

async function connect() {
  setConnection("connecting", "connecting…");
  try {
    if (!page.client.token && (await tokenRequired())) {
      askToken(null);
      return;
    }
    const caps = await page.client.capabilities();
    $("version").textContent = `${caps.orchestra_version} · API ${caps.api_version}`;
  } catch (error) {
    if (handleAuth(error)) return;
    setConnection("offline", `offline: ${error.message}`);
    schedule(OFFLINE_POLL_MS, connect);
    return;
  }
  $("token-form").hidden = true;
  $("status").hidden = false;
  await refresh();
}

function start() {
  page.tokensChart = new LineChart($("tokens-chart"));
  page.ttftChart = new LineChart($("ttft-chart"), { unit: " ms" });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    makeClient();
    connect();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    makeClient();
    askToken(null);
  });
  makeClient();
  connect();
}

start();
