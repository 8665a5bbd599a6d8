// The live feed: /ws/live messages, rendered a few times a second, the newest on top.

import { liveFeed } from "./api.js";
import { $, featureName, h, num, when } from "./dom.js";

const KEEP = 150;
const RENDER_MS = 250;

function summary(m) {
  switch (m.type) {
    case "decision":
      return [h("code", {}, m.predicted_label), ` at ${num(m.confidence)} → `,
        h("span", { class: `badge ${m.status}` }, m.status)];
    case "review":
      return ["resolved as ", h("code", {}, m.ground_truth), m.correct ? " (model right)" : " (model wrong)"];
    case "alert":
      return [h("span", { class: `badge ${m.severity}` }, m.severity), ` ${m.kind} ${m.feature ? featureName(m.feature) : m.metric ?? ""} `,
        `${num(m.value)} ≥ ${num(m.threshold)}`];
    case "metrics":
      return [`${m.window} window: ECE ${num(m.ece)}, ${m.n_labeled ?? 0} labeled of ${m.n_predictions ?? 0}`];
    default:
      return [JSON.stringify(m).slice(0, 120)];
  }
}

function stamp(m) {
  return m.decided_at_ms ?? m.resolved_at ?? m.created_at_ms ?? m.computed_at_ms ?? Date.now();
}

/** Starts the feed; `onMessage` also sees every message (to refresh other cards). */
export function startFeed(state, onMessage) {
  const list = $("#feed");
  const pending = [];
  let total = 0;
  let paused = false;
  const pause = $("#feed-pause");
  pause.onclick = () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
  };
  const status = $("#feed-status");
  const conn = liveFeed((m) => {
    total += 1;
    pending.push(m);
    if (pending.length > KEEP) pending.splice(0, pending.length - KEEP);
    onMessage(m);
  }, (st) => {
    status.textContent = { open: "live", closed: "reconnecting", denied: "not allowed" }[st];
    status.className = `status ${st}`;
  });
  const timer = setInterval(() => {
    $("#feed-count").textContent = total.toLocaleString("en-US");
    if (paused || pending.length === 0) return;
    const items = pending.splice(0).reverse().map((m) => {
      const model = state.models.find((x) => x.id === m.model_version_id);
      return h("li", { class: `feed-item ${m.type}`, dataset: { type: m.type } },
        h("span", { class: "feed-time" }, when(stamp(m))),
        h("span", { class: `feed-type ${m.type}` }, m.type),
        h("span", { class: "feed-model" }, model ? `${model.name} ${model.version}` : m.model ?? ""),
        h("span", { class: "feed-text" }, summary(m)));
    });
    list.prepend(...items);
    while (list.children.length > KEEP) list.lastElementChild.remove();
  }, RENDER_MS);
  return { stop: () => { clearInterval(timer); conn.stop(); } };
}
