// Charts as inline SVG: a plot frame with axes, and the three plots the console draws.

import { num, s, when } from "./dom.js";

const W = 420;
const H = 280;
const M = { top: 14, right: 16, bottom: 40, left: 48 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

function ticks(lo, hi, n = 5) {
  const step = (hi - lo) / n;
  return Array.from({ length: n + 1 }, (_, i) => lo + i * step);
}

/** A "nice" upper bound for an axis that starts at 0. */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= value * 1.05) ?? 10 * p;
}

/** The frame: an svg with gridlines and axes; x(v), y(v) map data to pixels. */
function frame({ xLo = 0, xHi = 1, yLo = 0, yHi = 1, xTicks, yTicks, xFmt, yFmt, xLabel, yLabel }) {
  const x = (v) => M.left + ((v - xLo) / (xHi - xLo || 1)) * PW;
  const y = (v) => M.top + PH - ((v - yLo) / (yHi - yLo || 1)) * PH;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
  const grid = s("g", { class: "grid-lines" });
  for (const t of yTicks ?? ticks(yLo, yHi)) {
    grid.append(
      s("line", { x1: M.left, x2: M.left + PW, y1: y(t), y2: y(t) }),
      s("text", { x: M.left - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, (yFmt ?? fmt2)(t)),
    );
  }
  for (const t of xTicks ?? ticks(xLo, xHi)) {
    grid.append(
      s("line", { x1: x(t), x2: x(t), y1: M.top, y2: M.top + PH, class: "v" }),
      s("text", { x: x(t), y: M.top + PH + 16, class: "tick", "text-anchor": "middle" }, (xFmt ?? fmt2)(t)),
    );
  }
  svg.append(
    grid,
    s("rect", { x: M.left, y: M.top, width: PW, height: PH, class: "axis-box" }),
    s("text", { x: M.left + PW / 2, y: H - 4, class: "axis-label", "text-anchor": "middle" }, xLabel ?? ""),
    s("text", {
      x: 12, y: M.top + PH / 2, class: "axis-label", "text-anchor": "middle",
      transform: `rotate(-90 12 ${M.top + PH / 2})`,
    }, yLabel ?? ""),
  );
  return { svg, x, y };
}

const fmt2 = (v) => (Math.abs(v) < 1e-12 ? "0" : v.toFixed(v >= 10 ? 0 : v >= 1 ? 1 : 2));

export function empty(message) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot empty", role: "img" });
  svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty-text" }, message));
  return svg;
}

/**
 * Reliability diagram: accuracy per confidence bin as bars, the gap to the bin's mean
 * confidence shaded, and the diagonal of perfect calibration.
 */
export function reliability(bins) {
  const filled = bins.filter((b) => b.count > 0 && b.accuracy !== null);
  if (filled.length === 0) return empty("no labeled predictions in this window");
  const { svg, x, y } = frame({ xLabel: "confidence", yLabel: "accuracy" });
  const most = Math.max(...bins.map((b) => b.count));
  const g = s("g");
  for (const b of bins) {
    if (b.count === 0) continue;
    const x0 = x(b.bin_lo) + 1;
    const w = x(b.bin_hi) - x(b.bin_lo) - 2;
    // Share of samples in the bin, as a thin strip along the bottom.
    const strip = (b.count / most) * 0.12 * PH;
    g.append(s("rect", { x: x0, y: y(0) - strip, width: w, height: strip, class: "count-bar" },
      s("title", {}, `${b.count} predictions`)));
    if (b.accuracy === null) continue;
    g.append(s("rect", {
      x: x0, y: y(b.accuracy), width: w, height: y(0) - y(b.accuracy), class: "acc-bar",
    }, s("title", {}, `[${b.bin_lo.toFixed(1)}, ${b.bin_hi.toFixed(1)}): accuracy ${num(b.accuracy)}, `
      + `mean confidence ${num(b.confidence)}, ${b.count} predictions`)));
    const top = Math.min(y(b.accuracy), y(b.confidence));
    g.append(s("rect", {
      x: x0, y: top, width: w, height: Math.abs(y(b.accuracy) - y(b.confidence)), class: "gap-bar",
    }));
  }
  svg.append(g);
  svg.append(s("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), class: "diagonal" }));
  const pts = filled.map((b) => `${x(b.confidence)},${y(b.accuracy)}`).join(" ");
  svg.append(s("polyline", { points: pts, class: "rel-line" }));
  for (const b of filled) svg.append(s("circle", { cx: x(b.confidence), cy: y(b.accuracy), r: 3, class: "rel-dot" }));
  return svg;
}

const MINUTE = 60_000;
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * MINUTE);

/** Tick times on whole minutes, hours or days, at most about five of them. */
function timeTicks(lo, hi) {
  const step = TIME_STEPS.find((st) => (hi - lo) / st <= 5) ?? TIME_STEPS.at(-1);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
  return { ticks: out, step };
}

function timeLabel(t, step) {
  const d = new Date(t);
  if (step >= 1440 * MINUTE) return d.toLocaleDateString("en-GB", { month: "short", day: "numeric" });
  return d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
}

/** Lines over time: series = [{name, cls, points: [{t (ms), v}]}]; one point per bucket. */
export function overTime(series, bucketMs = MINUTE) {
  const all = series.flatMap((sr) => sr.points.filter((p) => p.v !== null));
  if (all.length === 0) return empty("no labeled predictions in this window");
  let tLo = Math.min(...all.map((p) => p.t));
  let tHi = Math.max(...all.map((p) => p.t));
  const pad = Math.max(bucketMs, (tHi - tLo) * 0.04);
  tLo -= pad;
  tHi += pad;
  const yHi = niceMax(Math.max(...all.map((p) => p.v)));
  const { ticks: xt, step } = timeTicks(tLo, tHi);
  const { svg, x, y } = frame({
    xLo: tLo, xHi: tHi, yHi, xTicks: xt, yTicks: ticks(0, yHi, 5),
    xFmt: (t) => timeLabel(t, step), yFmt: (v) => v.toFixed(yHi <= 0.1 ? 3 : 2),
    xLabel: "event time", yLabel: "value",
  });
  for (const sr of series) {
    const pts = sr.points.filter((p) => p.v !== null);
    if (pts.length > 1) {
      svg.append(s("polyline", { points: pts.map((p) => `${x(p.t)},${y(p.v)}`).join(" "), class: `line ${sr.cls}` }));
    }
    for (const p of pts) {
      svg.append(s("circle", { cx: x(p.t), cy: y(p.v), r: pts.length > 40 ? 1.5 : 3, class: `dot ${sr.cls}` },
        s("title", {}, `${sr.name} ${num(p.v)} at ${when(p.t)}`)));
    }
  }
  return svg;
}

/**
 * Risk–coverage: risk among the kept predictions against the share kept, as a step curve
 * whose shaded area is the AURC; `operating` marks the model's abstain threshold, `advised`
 * (optional) the threshold advice's operating point.
 */
export function riskCoverage(points, operating, advised = null) {
  if (points.length === 0) return empty("no labeled predictions in this window");
  const pts = [...points].sort((a, b) => a.coverage - b.coverage);
  const yHi = niceMax(Math.max(...pts.map((p) => p.risk)));
  const { svg, x, y } = frame({
    yHi, yTicks: ticks(0, yHi, 5), yFmt: (v) => v.toFixed(yHi <= 0.1 ? 3 : 2),
    xLabel: "coverage (share of predictions kept)", yLabel: "risk (error rate)",
  });
  // AURC = Σ (c_j − c_{j−1}) · r_j: each point's risk holds from the previous coverage.
  let steps = "";
  let prev = 0;
  for (const p of pts) {
    steps += ` L ${x(prev)} ${y(p.risk)} L ${x(p.coverage)} ${y(p.risk)}`;
    prev = p.coverage;
  }
  svg.append(s("path", { d: `M ${x(0)} ${y(0)}${steps} L ${x(prev)} ${y(0)} Z`, class: "area" }));
  svg.append(s("path", { d: `M ${x(0)} ${y(pts[0].risk)}${steps}`, class: "line rc" }));
  if (operating) {
    svg.append(
      s("line", { x1: x(operating.coverage), x2: x(operating.coverage), y1: y(0), y2: y(yHi), class: "operating" }),
      s("circle", { cx: x(operating.coverage), cy: y(operating.risk), r: 4, class: "operating-dot" },
        s("title", {}, `abstain threshold ${num(operating.threshold)}: coverage ${num(operating.coverage)}, risk ${num(operating.risk)}`)),
      s("text", { x: x(operating.coverage) + 4, y: M.top + 12, class: "tick" }, `threshold ${num(operating.threshold, 2)}`),
    );
  }
  if (advised) {
    svg.append(
      s("line", { x1: x(advised.coverage), x2: x(advised.coverage), y1: y(0), y2: y(yHi), class: "advised" }),
      s("circle", { cx: x(advised.coverage), cy: y(Math.min(advised.risk, yHi)), r: 4, class: "advised-dot" },
        s("title", {}, `advised threshold ${num(advised.threshold, 2)}: coverage ${num(advised.coverage)}, risk ${num(advised.risk)}`)),
      s("text", { x: x(advised.coverage) + 4, y: M.top + 26, class: "tick advised-label" }, `advised ${num(advised.threshold, 2)}`),
    );
  }
  return svg;
}

/** Horizontal bars for a few named values in [0, max]: [{label, value, cls, title}]. */
export function bars(items, max) {
  const rowH = 22;
  const labelW = 130;
  const width = 420;
  const svg = s("svg", { viewBox: `0 0 ${width} ${items.length * rowH + 4}`, class: "bars", role: "img" });
  const top = max || Math.max(...items.map((i) => i.value), 1e-9);
  items.forEach((item, i) => {
    const w = Math.max(1, (item.value / top) * (width - labelW - 60));
    const yy = i * rowH + 2;
    svg.append(
      s("text", { x: labelW - 6, y: yy + 14, "text-anchor": "end", class: "bar-label" }, item.label),
      s("rect", { x: labelW, y: yy + 3, width: w, height: rowH - 8, rx: 2, class: `bar ${item.cls ?? ""}` },
        s("title", {}, item.title ?? `${item.label}: ${num(item.value)}`)),
      s("text", { x: labelW + w + 6, y: yy + 14, class: "bar-value" }, num(item.value)),
    );
  });
  return svg;
}
