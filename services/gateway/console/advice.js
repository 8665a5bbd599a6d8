// Before labels: the estimated accuracy of the window (from calibrated confidence) and the
// threshold advice with a risk guarantee, shown under the risk–coverage chart; an admin can
// apply the advice as the model version's abstain threshold (PATCH /api/models/{id}).

import { api } from "./api.js";
import { $, h, num, pct, count } from "./dom.js";

const settings = { targetRisk: 0.02, delta: 0.05 };

/** The estimate and the advice of model version `modelId` over `window`. */
export async function loadAdvice(modelId, window) {
  const [estimate, advice] = await Promise.all([
    api(`models/${modelId}/performance-estimate`, { params: { window } }),
    api(`models/${modelId}/threshold-advice`, {
      params: { window, target_risk: settings.targetRisk, delta: settings.delta },
    }),
  ]);
  return { estimate, advice };
}

/** The advised operating point for the risk–coverage chart (null without advice). */
export const advisedPoint = (loaded) => {
  const a = loaded?.advice;
  if (!a || a.threshold === null) return null;
  return { coverage: a.coverage, risk: a.empirical_risk, threshold: a.threshold };
};

function estimateLine(e) {
  if (!e || !e.estimated) return h("p", { class: "muted" }, "No calibrated predictions in this window yet.");
  const est = e.estimated;
  const parts = [
    h("strong", {}, `estimated accuracy ${num(est.accuracy)} ± ${num(est.band)}`),
    ` over ${count(est.n)} predictions, labeled or not`,
  ];
  if (e.estimated_auto) parts.push(`; auto-accepted ${num(e.estimated_auto.accuracy)}`);
  if (e.labeled) {
    const l = e.labeled;
    parts.push(`; labeled: realised ${num(l.realised_accuracy)} vs ${num(l.estimate.accuracy)}`);
    parts.push(h("span", { class: l.outside_band ? "advice-off" : "muted" },
      l.outside_band ? " (off by more than its band: recalibrate)" : " (within its band)"));
  }
  return h("p", { class: "estimate-line" }, ...parts);
}

function adviceLine(a) {
  if (!a) return h("p", { class: "muted" }, "No threshold advice.");
  if (a.threshold === null) return h("p", { class: "advice-null" }, `No advice: ${a.reason}`);
  return h("p", { class: "advice-line", title: `${a.method}; assumes ${a.assumption}` },
    h("strong", {}, `advised threshold ${num(a.threshold, 2)}`),
    ` (now ${num(a.current_threshold, 2)}): risk ≤ ${num(a.target_risk)} with probability `
      + `${num(1 - a.delta, 2)}, coverage ${pct(a.coverage)}, review rate ${pct(a.review_rate)}, `
      + `from ${count(a.n_labeled)} labeled events (bound ${num(a.risk_bound, 4)})`);
}

/**
 * Render the panel into #risk-advice. `onChange` reloads after the target or delta changed;
 * `onApply(threshold)` is offered to admins when the advice differs from the threshold.
 */
export function renderAdvice(loaded, { isAdmin, onChange, onApply }) {
  const input = (name, value) => h("input", {
    type: "number", min: "0.0001", max: "0.9999", step: "0.005", value, class: "small-number",
    "aria-label": name, id: `advice-${name}`,
    onchange: (ev) => {
      const v = Number(ev.target.value);
      if (v > 0 && v < 1) {
        settings[name === "target_risk" ? "targetRisk" : "delta"] = v;
        onChange();
      }
    },
  });
  const a = loaded?.advice;
  const apply = isAdmin && a && a.threshold !== null && a.threshold !== a.current_threshold
    ? h("button", { type: "button", class: "small", id: "advice-apply", onclick: () => onApply(a.threshold) },
      `Apply ${num(a.threshold, 2)} as threshold`)
    : null;
  $("#risk-advice").replaceChildren(
    estimateLine(loaded?.estimate),
    h("div", { class: "advice-controls" },
      h("label", { class: "field" }, "target risk", input("target_risk", settings.targetRisk)),
      h("label", { class: "field" }, "delta", input("delta", settings.delta)),
      apply),
    adviceLine(a),
  );
}
