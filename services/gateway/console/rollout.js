// Rollout panel: the active calibrator of the selected model version, the candidate beside
// it (shadow or canary), both maps' metrics on the same labeled events so far, the
// reliability diagram of each arm, and the transition log with what decided each step.
import { api } from "./api.js";
import { reliability, empty } from "./charts.js";
import { $, h, num, pct, count, when } from "./dom.js";

const toBins = (bins) =>
  (bins ?? []).map((b) => ({ bin_lo: b.lo, bin_hi: b.hi, confidence: b.confidence, accuracy: b.accuracy, count: b.count }));

export async function loadRollout(modelId) {
  return api(`models/${modelId}/rollout`);
}

function metricsTable(paired) {
  const row = (name, m) =>
    h("tr", {},
      h("td", {}, name),
      h("td", {}, count(m.n)),
      h("td", {}, num(m.ece)),
      h("td", {}, num(m.brier)),
      h("td", {}, num(m.nll)),
      h("td", {}, num(m.aurc)),
      h("td", {}, pct(m.review_rate)));
  return h("table", { class: "grid", id: "rollout-metrics" },
    h("thead", {}, h("tr", {}, ...["map", "labeled", "ECE", "Brier", "NLL", "AURC", "review"].map((t) => h("th", {}, t)))),
    h("tbody", {}, row("active", paired.active), row("candidate", paired.candidate)));
}

function transitionsTable(transitions) {
  if (!transitions.length) return empty("no transitions yet");
  const rows = transitions.slice(0, 20).map((t) => {
    const test = t.numbers?.test;
    const interval = test?.nll ? `[${num(test.nll.lo)}, ${num(test.nll.hi)}]` : "—";
    return h("tr", {},
      h("td", {}, when(t.created_at)),
      h("td", {}, `${t.from_stage} → ${t.to_stage}`),
      h("td", {}, t.trigger),
      h("td", {}, count(t.numbers?.labeled ?? 0)),
      h("td", { title: "confidence sequence of NLL(active) − NLL(candidate)" }, interval),
      h("td", { title: t.candidate_version }, t.reason));
  });
  return h("table", { class: "grid", id: "rollout-log" },
    h("thead", {}, h("tr", {}, ...["when", "step", "trigger", "labeled", "ΔNLL interval", "reason"].map((x) => h("th", {}, x)))),
    h("tbody", {}, ...rows));
}

export function renderRollout(state) {
  const stage = state.stage ? `${state.stage}${state.stage === "canary" ? ` at ${pct(state.canary_share)}` : ""}` : "none";
  $("#rollout-note").textContent =
    `active ${state.active}; candidate ${state.candidate ?? "—"} (${stage})`;
  const paired = state.paired;
  if (!paired || !paired.labeled) {
    $("#rollout-metrics-box").replaceChildren(empty(state.rollout ? "no paired labeled events yet" : "no rollout yet"));
    $("#rollout-arms").replaceChildren();
  } else {
    const delta = paired.nll_diff.n ? paired.nll_diff.total / paired.nll_diff.n : null;
    $("#rollout-metrics-box").replaceChildren(
      metricsTable(paired),
      h("p", { class: "muted" }, `${count(paired.labeled)} paired labeled events; mean NLL gain ${num(delta)}`));
    $("#rollout-arms").replaceChildren(
      h("div", {}, h("h3", {}, `canary arm (${count(paired.canary.labeled)} labeled)`),
        paired.canary.labeled ? reliability(toBins(paired.canary.bins)) : empty("no canary events labeled")),
      h("div", {}, h("h3", {}, `control arm (${count(paired.control.labeled)} labeled)`),
        paired.control.labeled ? reliability(toBins(paired.control.bins)) : empty("no control events labeled")));
  }
  $("#rollout-log-box").replaceChildren(transitionsTable(state.transitions ?? []));
}
