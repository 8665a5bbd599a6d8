// Recalibration panel: the calibration runs of the selected model version and the
// before/after reliability diagram of the newest finished run (on its held-out part).
import { api } from "./api.js";
import { reliability, empty } from "./charts.js";
import { $, h, num, when } from "./dom.js";

const toBins = (bins) =>
  (bins ?? []).map((b) => ({ bin_lo: b.lo, bin_hi: b.hi, confidence: b.confidence, accuracy: b.accuracy, count: b.count }));

export async function loadRecalibration(modelId) {
  const runs = await api(`models/${modelId}/calibration-runs`);
  const done = runs.find((r) => r.status === "done" && r.verdict !== "failed");
  const detail = done ? await api(`calibration-runs/${done.run_id}`) : null;
  return { runs, detail };
}

export function renderRecalibration({ runs, detail }) {
  const rows = runs.slice(0, 10).map((r) =>
    h("tr", {},
      h("td", {}, when(r.requested_at)),
      h("td", {}, r.trigger),
      h("td", {}, r.status),
      h("td", {}, r.verdict ?? "—"),
      h("td", {}, r.advice ?? "—"),
      h("td", { title: r.reason ?? "" }, r.artifact_version ?? "—"),
    ));
  $("#recalibration-runs").replaceChildren(
    runs.length
      ? h("table", { class: "grid" },
          h("thead", {}, h("tr", {}, ...["requested", "trigger", "status", "verdict", "advice", "artifact"].map((t) => h("th", {}, t)))),
          h("tbody", {}, ...rows))
      : empty("no calibration runs yet"),
  );
  const result = detail?.result;
  if (!result?.before || !result?.after) {
    $("#recalibration-before").replaceChildren(empty("no finished run to compare"));
    $("#recalibration-after").replaceChildren();
    $("#recalibration-note").textContent = "";
    return;
  }
  $("#recalibration-note").textContent =
    `held-out ECE ${num(result.before.ece)} → ${num(result.after.ece)}, NLL ${num(result.before.nll)} → ${num(result.after.nll)} (${detail.verdict})`;
  $("#recalibration-before").replaceChildren(h("h3", {}, "before"), reliability(toBins(result.before.bins)));
  $("#recalibration-after").replaceChildren(h("h3", {}, "after"), reliability(toBins(result.after.bins)));
}
