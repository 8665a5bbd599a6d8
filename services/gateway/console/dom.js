// Small DOM and formatting helpers. Data is only ever inserted as text, never as markup.

export const $ = (selector) => document.querySelector(selector);

/** An element: h("td", {class: "num"}, "0.123"); children are nodes or strings. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element: s("line", {x1: 0, ...}). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    // Styles through the CSSOM: the page's CSP forbids inline style attributes.
    else if (name === "style") Object.assign(el.style, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

/** A number with fixed decimals, or an em dash when there is none. */
export function num(value, digits = 3) {
  return value === null || value === undefined || Number.isNaN(value)
    ? "—"
    : Number(value).toFixed(digits);
}

export function pct(value, digits = 1) {
  return value === null || value === undefined ? "—" : `${(value * 100).toFixed(digits)}%`;
}

export function count(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

/** "14:03:07" today, "Dec 1 14:03" on other days. */
export function when(value) {
  const t = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(t.getTime())) return "—";
  const today = new Date().toDateString() === t.toDateString();
  return today
    ? t.toLocaleTimeString("en-GB", { hour12: false })
    : t.toLocaleString("en-GB", { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

// The drift worker's names for the two model-level signals it scores beside the features.
const SIGNALS = { __confidence__: "confidence", __predicted_label__: "predicted-label mix" };

export const featureName = (f) => (f === null || f === undefined ? "—" : SIGNALS[f] ?? f);

let toastTimer = 0;

export function toast(message, kind = "info") {
  const el = $("#toast");
  el.textContent = message;
  el.className = `toast ${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

/** fn, run `ms` after the first of a burst of calls; the rest of the burst joins that run. */
export function soon(fn, ms) {
  let timer = 0;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = 0;
      fn();
    }, ms);
  };
}
