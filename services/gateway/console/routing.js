// The routing card: per goal, every path's outcomes, success rate with its 95 % interval,
// recent 24 h against the 7–30-day baseline, trend, current traffic share and cost.

import { api } from "./api.js";
import { $, count, h, num, pct } from "./dom.js";

/** The tenant's goals and the policy of the chosen one (or of the first). */
export async function loadRouting(current) {
  const goals = await api("route/goals");
  const goal = goals.includes(current) ? current : goals[0] ?? null;
  const policy = goal ? await api("route/policy", { params: { goal } }) : null;
  return { goals, goal, policy };
}

function shareBar(share) {
  return h("span", { class: "share", title: pct(share) },
    h("span", { class: "share-fill", style: `width: ${(share * 100).toFixed(1)}%` }),
    h("span", { class: "share-text" }, pct(share)));
}

export function renderRouting(routing, onGoal) {
  const select = $("#routing-goal");
  select.replaceChildren(...routing.goals.map((g) => h("option", { value: g, selected: g === routing.goal ? "" : null }, g)));
  select.onchange = () => onGoal(select.value);
  const body = $("#routing tbody");
  const paths = routing.policy?.paths ?? [];
  body.replaceChildren(...paths.map((p) => h("tr", { dataset: { path: p.path } },
    h("td", {}, p.path),
    h("td", { class: "num" }, count(p.outcomes)),
    h("td", { class: "num" }, `${pct(p.success_rate)} [${pct(p.interval[0])}, ${pct(p.interval[1])}]`),
    h("td", { class: "num" }, p.recent_rate === null ? "–" : pct(p.recent_rate)),
    h("td", { class: "num" }, p.baseline_rate === null ? "–" : pct(p.baseline_rate)),
    h("td", {}, h("span", { class: `trend ${p.trend}` }, p.trend)),
    h("td", {}, shareBar(p.traffic_share)),
    h("td", { class: "num" }, p.cost === null ? "–" : num(p.cost, 4)))));
  const pol = routing.policy;
  $("#routing-note").textContent = pol
    ? `half-life ${(pol.half_life_seconds / 3600).toFixed(1)} h · floor ${pct(pol.floor)} until ${pol.min_outcomes} outcomes`
    : "no routed goals yet";
}
