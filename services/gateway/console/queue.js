// The review queue: withheld predictions, the one being reviewed, and its resolution.

import { api, ApiError } from "./api.js";
import { $, h, num, toast, when } from "./dom.js";

const PAGE = 1000;

export async function loadQueue() {
  return api("review-queue", { params: { limit: PAGE } });
}

function modelName(state, id) {
  const m = state.models.find((x) => x.id === id);
  return m ? `${m.name} ${m.version}` : `#${id}`;
}

export function renderQueue(state, actions) {
  const rows = visible(state);
  $("#queue-count").textContent = rows.length >= PAGE ? `${PAGE}+` : String(rows.length);
  $("#queue-readonly").hidden = state.canReview;
  const body = $("#queue tbody");
  // Rebuilt only when the rows change, so a refresh neither flickers nor loses a click.
  const shown = rows.slice(0, 200);
  const signature = `${state.canReview}|${shown.map((p) => p.event_id).join(",")}`;
  if (body.dataset.signature !== signature) {
    body.dataset.signature = signature;
    body.replaceChildren(...(shown.length ? shown.map((p) => queueRow(state, p, actions))
      : [h("tr", { class: "empty-row" }, h("td", { colspan: 7 }, "Nothing is waiting for review."))]));
  }
  for (const tr of body.querySelectorAll("tr.queue-row")) {
    tr.classList.toggle("selected", tr.dataset.eventId === state.reviewing);
  }
  renderDetail(state, actions);
}

function queueRow(state, p, actions) {
  return h("tr", {
    class: "queue-row",
    dataset: { eventId: p.event_id, modelId: p.model_version_id },
    onclick: () => actions.open(p.event_id),
  },
  h("td", {}, when(p.event_time)),
  h("td", {}, modelName(state, p.model_version_id)),
  h("td", {}, h("code", {}, p.predicted_label)),
  h("td", { class: "num" }, num(p.confidence)),
  h("td", { class: "num" }, num(p.calibrated_confidence)),
  h("td", { class: "num" }, num(p.threshold, 2)),
  h("td", { class: "actions" }, h("button", { type: "button", class: "small review-button" },
    state.canReview ? "Review" : "View")));
}

function renderDetail(state, actions) {
  const box = $("#review-detail");
  const p = state.queue.find((x) => x.event_id === state.reviewing);
  if (!p) {
    box.hidden = true;
    box.replaceChildren();
    delete box.dataset.eventId;
    return;
  }
  if (box.dataset.eventId === p.event_id) return; // keep what the reviewer has typed
  box.dataset.eventId = p.event_id;
  const probs = Object.entries(p.probabilities ?? {}).sort((a, b) => b[1] - a[1]);
  const feats = Object.entries(p.features ?? {});
  const choices = [...new Set([p.predicted_label, ...probs.map(([k]) => k)])];
  const input = h("input", { id: "ground-truth", type: "text", placeholder: "ground truth", "aria-label": "ground truth", spellcheck: "false" });
  const resolveButton = h("button", { type: "submit", id: "resolve", class: "primary" }, "Resolve");
  const form = h("form", {
    class: "resolve",
    onsubmit: (ev) => {
      ev.preventDefault();
      const truth = input.value.trim();
      if (!truth) { toast("Type or pick the ground truth first.", "error"); return; }
      resolveButton.disabled = true;
      actions.resolve(p.event_id, truth).finally(() => { resolveButton.disabled = false; });
    },
  },
  h("div", { class: "choices" }, h("span", { class: "muted" }, "ground truth:"), choices.map((c) => h("button", {
    type: "button", class: "small choice label-choice", dataset: { label: c },
    onclick: () => { input.value = c; for (const b of form.querySelectorAll(".choice")) b.classList.toggle("on", b.dataset.label === c); },
  }, c))),
  h("div", { class: "resolve-row" }, input, resolveButton));

  box.replaceChildren(
    h("div", { class: "detail-head" },
      h("h3", {}, `Withheld prediction of ${modelName(state, p.model_version_id)}`),
      h("button", { type: "button", class: "ghost small", onclick: () => actions.open(null) }, "Close")),
    h("dl", { class: "facts" },
      h("dt", {}, "event"), h("dd", {}, h("code", {}, p.event_id)),
      h("dt", {}, "event time"), h("dd", {}, when(p.event_time)),
      h("dt", {}, "predicted"), h("dd", {}, h("code", {}, p.predicted_label)),
      h("dt", {}, "confidence"), h("dd", { id: "detail-confidence" }, num(p.confidence)),
      h("dt", {}, "calibrated"), h("dd", {}, num(p.calibrated_confidence)),
      h("dt", {}, "threshold"), h("dd", {}, num(p.threshold, 2))),
    h("div", { class: "detail-cols" },
      h("div", {}, h("h4", {}, "Probabilities"), probs.length
        ? h("table", { class: "grid compact probs" }, h("tbody", {}, probs.map(([k, v]) => h("tr", {},
          h("td", {}, h("code", {}, k)),
          h("td", { class: "bar-cell" }, h("span", { class: "pbar", style: { width: `${Math.round(v * 100)}%` } })),
          h("td", { class: "num" }, num(v))))))
        : h("p", { class: "muted" }, "not sent")),
      h("div", {}, h("h4", {}, "Features"), feats.length
        ? h("table", { class: "grid compact feats" }, h("tbody", {}, feats.map(([k, v]) => h("tr", {},
          h("td", {}, k), h("td", { class: "num" }, typeof v === "number" ? num(v, 4) : String(v))))))
        : h("p", { class: "muted" }, "not sent"))),
    state.canReview ? form : h("p", { class: "muted" }, "Resolving needs a reviewer or admin key."),
  );
  box.hidden = false;
}

function visible(state) {
  return $("#queue-only-selected").checked
    ? state.queue.filter((p) => p.model_version_id === state.selected)
    : state.queue;
}

/**
 * POST the ground truth; the row goes at once and the next one opens, so a reviewer can
 * work down the queue. The caller reads the queue again afterwards.
 */
export async function resolve(state, eventId, truth) {
  try {
    const out = await api(`review/${encodeURIComponent(eventId)}`, { method: "POST", body: { ground_truth: truth } });
    toast(`Resolved as “${truth}” (${out.correct ? "the model was right" : "the model was wrong"}).`, "ok");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 409)) {
      toast(`Not resolved: ${err.message}`, "error");
      return false;
    }
    toast("Someone already resolved this prediction.", "error");
  }
  const rows = visible(state);
  const at = rows.findIndex((p) => p.event_id === eventId);
  const next = rows[at + 1] ?? rows[at - 1] ?? null;
  state.queue = state.queue.filter((p) => p.event_id !== eventId);
  state.reviewing = next && next.event_id !== eventId ? next.event_id : null;
  return true;
}
