// The read-only cards: model versions overview, reliability, ECE/Brier over time,
// risk–coverage, drift and alerts.

import { api, optional } from "./api.js";
import { bars, empty, overTime, reliability, riskCoverage } from "./charts.js";
import { $, count, featureName, h, num, pct, when } from "./dom.js";

/** Calibration and AURC of every model version, for the overview table. */
export async function loadOverview(models, window) {
  const rows = await Promise.all(models.map(async (m) => {
    const [cal, rc] = await Promise.all([
      api("calibration", { params: { model_version_id: m.id, window } }),
      api("risk-coverage", { params: { model_version_id: m.id, window } }),
    ]);
    return { model: m, cal, rc };
  }));
  return new Map(rows.map((r) => [r.model.id, r]));
}

export function renderOverview(state, onSelect) {
  const body = $("#overview tbody");
  const queueBy = new Map();
  for (const p of state.queue) queueBy.set(p.model_version_id, (queueBy.get(p.model_version_id) ?? 0) + 1);
  body.replaceChildren(...state.models.map((m) => {
    const row = state.overview.get(m.id);
    const cal = row?.cal;
    const tr = h("tr", {
      dataset: { modelId: m.id },
      class: m.id === state.selected ? "selected" : null,
      onclick: () => onSelect(m.id),
      title: "show this version",
    },
    h("td", {}, m.name),
    h("td", {}, m.version),
    h("td", {}, h("span", { class: `stage ${m.stage}` }, m.stage)),
    h("td", { class: "num" }, num(m.abstain_threshold, 2)),
    h("td", { class: "num" }, count(cal?.n_predictions)),
    h("td", { class: "num" }, count(cal?.n_labeled)),
    h("td", { class: "num" }, pct(cal?.accuracy)),
    h("td", { class: "num ece" }, num(cal?.ece)),
    h("td", { class: "num brier" }, num(cal?.brier)),
    h("td", { class: "num aurc" }, num(row?.rc?.aurc)),
    h("td", { class: "num queue" }, count(queueBy.get(m.id) ?? 0)));
    return tr;
  }));
  $("#overview-note").textContent = state.models.length
    ? `window ${state.window} · click a row to inspect it`
    : "no model versions registered yet";
}

function stat(name, value, cls) {
  return h("span", { class: "stat" }, h("span", { class: "stat-name" }, name), h("span", { class: `stat-value ${cls ?? ""}` }, value));
}

export function renderReliability(cal) {
  $("#reliability-stats").replaceChildren(
    stat("ECE", num(cal.ece), "ece"),
    stat("MCE", num(cal.mce)),
    stat("Brier", num(cal.brier), "brier"),
    stat("labeled", count(cal.n_labeled)),
  );
  $("#reliability-chart").replaceChildren(reliability(cal.bins));
}

const BUCKET_MS = { "5m": 60_000, "1h": 60_000, "24h": 3_600_000, "7d": 3_600_000, all: 86_400_000 };

export function renderTimeseries(series) {
  const points = series.points ?? [];
  const pick = (field) => points.map((p) => ({ t: p.bucket_start * 1000, v: p[field] }));
  $("#timeseries-chart").replaceChildren(overTime([
    { name: "ECE", cls: "ece", points: pick("ece") },
    { name: "Brier", cls: "brier", points: pick("brier") },
  ], BUCKET_MS[series.window]));
}

/** The curve's point at the model's abstain threshold: the lowest threshold ≥ it. */
function operatingPoint(points, threshold) {
  const kept = points.filter((p) => p.threshold >= threshold);
  if (kept.length === 0) return null;
  return kept.reduce((a, b) => (b.threshold < a.threshold ? b : a));
}

export function renderRisk(rc, model, advised = null) {
  $("#risk-stats").replaceChildren(
    stat("AURC", num(rc.aurc), "aurc"),
    stat("E-AURC", num(rc.e_aurc)),
    stat("labeled", count(rc.n_labeled)),
  );
  const op = model ? operatingPoint(rc.points, model.abstain_threshold) : null;
  $("#risk-chart").replaceChildren(riskCoverage(rc.points, op, advised));
}

/** Current drift scores and drift alerts; either endpoint may be missing (404). */
export async function loadDrift(modelId) {
  const [current, alerts] = await Promise.all([
    optional("drift", { model_version_id: modelId }, undefined),
    optional("drift-alerts", { model_version_id: modelId }, undefined),
  ]);
  const list = (v) => (Array.isArray(v) ? v : v?.features ?? v?.items ?? []);
  return {
    available: current !== undefined || alerts !== undefined,
    current: current ?? null,
    scores: list(current),
    alerts: list(alerts).filter((a) => a.model_version_id == null || a.model_version_id === modelId),
  };
}

function severityBadge(severity) {
  return h("span", { class: `badge ${severity ?? "info"}` }, severity ?? "—");
}

function scoreBar(sc) {
  const value = sc.drift_score ?? 0;
  const severity = sc.severity
    ?? (sc.threshold && value >= sc.threshold ? (value >= 1.5 * sc.threshold ? "critical" : "warning") : null);
  return {
    label: featureName(sc.feature),
    value,
    cls: sc.trusted === false ? "untrusted" : severity ?? "",
    title: `${featureName(sc.feature)}: ${sc.method ?? "score"} ${num(value)}`
      + (sc.threshold !== undefined ? `, threshold ${num(sc.threshold)}` : "")
      + (sc.n_samples !== undefined ? `, ${sc.n_samples} samples` : "")
      + (sc.trusted === false ? " (too few samples to trust yet)" : ""),
  };
}

function driftNote(drift) {
  if (!drift.available) return "drift endpoints not available";
  const c = drift.current;
  if (!c || !c.reference_version) return "";
  return `window ${c.window ?? "—"} · reference ${String(c.reference_version).slice(0, 12)}`;
}

export function renderDrift(drift, liveAlerts) {
  const scores = drift.scores.filter((sc) => typeof sc.drift_score === "number")
    .sort((a, b) => b.drift_score / (b.threshold || 1) - a.drift_score / (a.threshold || 1));
  $("#drift-scores").replaceChildren(...(scores.length
    ? [h("h3", {}, "Current scores (alerting method per feature)"), bars(scores.slice(0, 12).map(scoreBar))]
    : []));
  const alerts = [
    ...liveAlerts.filter((a) => a.kind !== "drift").map((a) => ({
      created_at: a.created_at_ms, kind: a.kind, feature: a.feature ?? a.metric,
      drift_score: a.value, threshold: a.threshold, severity: a.severity, method: a.method, window: a.window,
    })),
    ...drift.alerts.map((a) => ({ kind: "drift", ...a })),
  ].sort((a, b) => new Date(b.created_at) - new Date(a.created_at)).slice(0, 50);
  $("#drift-note").textContent = driftNote(drift);
  if (alerts.length === 0) {
    $("#alerts").replaceChildren(scores.length ? h("p", { class: "muted" }, "No alerts for this version.")
      : h("div", { class: "empty-box" }, "no drift data", h("small", {}, "No drift scores or alerts for this version yet.")));
    return;
  }
  $("#alerts").replaceChildren(h("table", { class: "grid compact", id: "alerts-table" },
    h("thead", {}, h("tr", {}, ["time", "kind", "feature", "score", "threshold", "severity", "method", "window", "reference"]
      .map((c) => h("th", { class: ["score", "threshold"].includes(c) ? "num" : null }, c)))),
    h("tbody", {}, alerts.map((a) => h("tr", {},
      h("td", {}, when(a.created_at)),
      h("td", {}, a.kind ?? "drift"),
      h("td", {}, featureName(a.feature)),
      h("td", { class: "num" }, num(a.drift_score)),
      h("td", { class: "num" }, num(a.threshold)),
      h("td", {}, severityBadge(a.severity)),
      h("td", {}, a.method ?? "—"),
      h("td", {}, a.window ?? "—"),
      h("td", {}, a.reference_version ? h("code", {}, String(a.reference_version).slice(0, 12)) : "—"))))));
}

export function renderUnavailable(message) {
  for (const id of ["#reliability-chart", "#timeseries-chart", "#risk-chart"]) $(id).replaceChildren(empty(message));
}
