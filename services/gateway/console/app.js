// The review console: sign in with a key, then watch and review the tenant's models.

import { api, ApiError, forgetKey, storedKey, storeKey } from "./api.js";
import { $, h, soon, toast } from "./dom.js";
import { startFeed } from "./feed.js";
import * as advice from "./advice.js";
import * as panels from "./panels.js";
import * as queue from "./queue.js";
import * as recalibration from "./recalibration.js";
import * as rollout from "./rollout.js";
import { loadRouting, renderRouting } from "./routing.js";

const READ = ["viewer", "reviewer", "admin"];
const REVIEW = ["reviewer", "admin"];
const REFRESH_MS = 15_000;
const LIVE_ALERTS_KEPT = 50;

const state = {
  me: null,
  models: [],
  selected: null,
  window: "24h",
  overview: new Map(),
  queue: [],
  reviewing: null,
  canReview: false,
  isAdmin: false,
  liveAlerts: [],
  drift: { available: false, scores: [], alerts: [] },
};
let feed = null;
let timer = 0;

function show(view) {
  $("#login").hidden = view !== "login";
  $("#no-read").hidden = view !== "no-read";
  $("#dashboard").hidden = view !== "dashboard";
  $("#session").hidden = view === "login";
}

function signOut(message) {
  forgetKey();
  feed?.stop();
  feed = null;
  clearInterval(timer);
  Object.assign(state, { me: null, models: [], selected: null, queue: [], reviewing: null, liveAlerts: [] });
  $("#feed").replaceChildren();
  $("#api-key").value = "";
  const err = $("#login-error");
  err.textContent = message ?? "";
  err.hidden = !message;
  show("login");
  $("#api-key").focus();
}

/** Runs a refresh; a revoked key signs out, other failures are shown, not thrown. */
async function guard(what, fn) {
  try {
    await fn();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut("The key is no longer valid; sign in again.");
    else toast(`Could not load ${what}: ${err.message}`, "error");
  }
}

const selectedModel = () => state.models.find((m) => m.id === state.selected) ?? null;

async function loadModels() {
  state.models = await api("models");
  if (!state.models.some((m) => m.id === state.selected)) {
    const production = state.models.filter((m) => m.stage === "production");
    state.selected = (production.at(-1) ?? state.models.at(-1))?.id ?? null;
  }
  const select = $("#model-select");
  select.replaceChildren(...state.models.map((m) => h("option", {
    value: m.id, selected: m.id === state.selected,
  }, `${m.name} ${m.version} (${m.stage})`)));
  select.disabled = state.models.length === 0;
}

async function refreshSelected() {
  const m = selectedModel();
  if (!m) {
    panels.renderUnavailable("no model version registered yet");
    return;
  }
  const params = { model_version_id: m.id, window: state.window };
  const [cal, rc, ts, drift, before] = await Promise.all([
    api("calibration", { params }),
    api("risk-coverage", { params }),
    api("timeseries", { params: { model_version_id: m.id, window: $("#timeseries-select").value } }),
    panels.loadDrift(m.id).catch(() => ({ available: false, scores: [], alerts: [] })),
    advice.loadAdvice(m.id, state.window).catch(() => null),
  ]);
  if (m.id !== state.selected) return; // the user moved on meanwhile
  panels.renderReliability(cal);
  panels.renderTimeseries(ts);
  panels.renderRisk(rc, m, advice.advisedPoint(before));
  advice.renderAdvice(before, {
    isAdmin: state.isAdmin,
    onChange: () => guard("the threshold advice", refreshSelected),
    onApply: (threshold) => guard("the threshold change", () => applyThreshold(m, threshold)),
  });
  state.drift = drift;
  renderAlerts();
  const recal = await recalibration.loadRecalibration(m.id).catch(() => ({ runs: [], detail: null }));
  if (m.id === state.selected) recalibration.renderRecalibration(recal);
  const roll = await rollout.loadRollout(m.id).catch(() => null);
  if (roll && m.id === state.selected) rollout.renderRollout(roll);
}

/** Make the advised threshold the version's abstain threshold (admins only). */
async function applyThreshold(m, threshold) {
  await api(`models/${m.id}`, { method: "PATCH", body: { abstain_threshold: threshold } });
  toast(`${m.name} ${m.version}: abstain threshold set to ${threshold.toFixed(2)}`);
  await refreshAll();
}

function renderAlerts() {
  panels.renderDrift(state.drift, state.liveAlerts.filter((a) => a.model_version_id === state.selected));
}

async function refreshOverview() {
  state.overview = await panels.loadOverview(state.models, state.window);
  panels.renderOverview(state, select);
}

const queueActions = {
  open: (eventId) => {
    state.reviewing = eventId;
    queue.renderQueue(state, queueActions);
    if (eventId) $("#review-detail").scrollIntoView({ block: "nearest" });
  },
  resolve: async (eventId, truth) => {
    if (await queue.resolve(state, eventId, truth)) renderQueueAndCounts();
    await guard("the review queue", refreshQueue);
  },
};

function renderQueueAndCounts() {
  queue.renderQueue(state, queueActions);
  panels.renderOverview(state, select);
}

async function refreshQueue() {
  state.queue = await queue.loadQueue();
  renderQueueAndCounts();
}

let routingGoal = null;

async function refreshRouting() {
  const routing = await loadRouting(routingGoal);
  routingGoal = routing.goal;
  renderRouting(routing, (goal) => {
    routingGoal = goal;
    guard("the routing policy", refreshRouting);
  });
}

async function refreshAll() {
  await guard("the model versions", loadModels);
  await Promise.all([
    guard("the routing policy", refreshRouting),
    guard("the metrics", refreshOverview),
    guard("the selected version", refreshSelected),
    guard("the review queue", refreshQueue),
  ]);
}

function select(id) {
  state.selected = Number(id);
  $("#model-select").value = String(state.selected);
  panels.renderOverview(state, select);
  queue.renderQueue(state, queueActions);
  renderAlerts();
  guard("the selected version", refreshSelected);
}

// Live messages say something changed; the cards are read again shortly after, at most
// once per burst, so a busy feed costs a few requests a second, not one per message.
const soonQueue = soon(() => guard("the review queue", refreshQueue), 300);
const laterQueue = soon(() => guard("the review queue", refreshQueue), 2000);
const soonMetrics = soon(() => Promise.all([
  guard("the metrics", refreshOverview), guard("the selected version", refreshSelected),
]), 2000);

function onLive(m) {
  if (m.type === "review") soonQueue();
  else if (m.type === "decision" && m.status === "review") laterQueue();
  else if (m.type === "metrics") soonMetrics();
  else if (m.type === "alert") {
    state.liveAlerts.unshift(m);
    state.liveAlerts.length = Math.min(state.liveAlerts.length, LIVE_ALERTS_KEPT);
    if (m.model_version_id !== state.selected) return;
    if (m.kind === "drift") soonMetrics(); // drift alerts are read back from the API
    else renderAlerts();
  }
}

async function signIn(key) {
  let me;
  try {
    me = await api("me", { key });
  } catch (err) {
    const message = err instanceof ApiError && err.status === 401
      ? "This key is not valid (unknown or revoked)."
      : `The gateway did not answer: ${err.message}`;
    signOut(message);
    return;
  }
  storeKey(key);
  state.me = me;
  $("#tenant").textContent = me.tenant;
  $("#roles").replaceChildren(...me.roles.map((r) => h("span", { class: `role ${r}` }, r)));
  if (!me.roles.some((r) => READ.includes(r))) {
    $("#no-read-text").textContent = `This key of tenant “${me.tenant}” has the role `
      + `${me.roles.join(", ")}: it can send predictions but cannot read models, metrics or `
      + "the review queue. Sign in with a viewer, reviewer or admin key.";
    for (const sel of ["#model-select", "#window-select"]) $(sel).closest("label").hidden = true;
    show("no-read");
    return;
  }
  for (const sel of ["#model-select", "#window-select"]) $(sel).closest("label").hidden = false;
  state.canReview = me.roles.some((r) => REVIEW.includes(r));
  state.isAdmin = me.roles.includes("admin");
  document.body.classList.toggle("can-review", state.canReview);
  show("dashboard");
  await refreshAll();
  feed = startFeed(state, onLive);
  timer = setInterval(refreshAll, REFRESH_MS);
}

function boot() {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("#api-key").value.trim();
    if (key) signIn(key);
  });
  $("#sign-out").addEventListener("click", () => signOut());
  $("#no-read-sign-out").addEventListener("click", () => signOut());
  $("#model-select").addEventListener("change", (ev) => select(ev.target.value));
  $("#window-select").addEventListener("change", (ev) => {
    state.window = ev.target.value;
    guard("the metrics", refreshOverview);
    guard("the selected version", refreshSelected);
  });
  $("#timeseries-select").addEventListener("change", () => guard("the selected version", refreshSelected));
  $("#queue-only-selected").addEventListener("change", () => queue.renderQueue(state, queueActions));
  const key = storedKey();
  if (key) signIn(key);
  else signOut();
}

boot();
