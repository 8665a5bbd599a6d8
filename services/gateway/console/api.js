// The gateway's API as the console uses it. The signed-in key is held for the page's life and
// kept in sessionStorage only so that a reload of the tab stays signed in.

const KEY = "caliber.apiKey";
// The console lives at <root>/console/, the API at <root>/api/ (works behind a path prefix).
const ROOT = new URL("..", document.baseURI);

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

let current = sessionStorage.getItem(KEY);

export const storedKey = () => current;
export const storeKey = (key) => {
  current = key;
  sessionStorage.setItem(KEY, key);
};
export const forgetKey = () => {
  current = null;
  sessionStorage.removeItem(KEY);
};

function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return JSON.stringify(detail);
}

/** GET (or `method`) a path under /api; the parsed JSON, or an ApiError. */
export async function api(path, { method = "GET", params = {}, body, key = storedKey() } = {}) {
  const url = new URL(`api/${path}`, ROOT);
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) {
    let detail = res.statusText;
    try {
      detail = describe((await res.json()).detail ?? detail);
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(res.status, detail);
  }
  return res.json();
}

/** The answer, or `fallback` when the endpoint does not exist (yet) or has nothing. */
export async function optional(path, params, fallback) {
  try {
    return await api(path, { params });
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return fallback;
    throw err;
  }
}

/**
 * The live feed: calls onMessage(object) per message and onState("open" | "closed" |
 * "denied"); reconnects with backoff until stop() is called.
 */
export function liveFeed(onMessage, onState) {
  let ws = null;
  let stopped = false;
  let delay = 500;
  const open = () => {
    const url = new URL("ws/live", ROOT);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("api_key", storedKey() || "");
    ws = new WebSocket(url);
    ws.onopen = () => { delay = 500; onState("open"); };
    ws.onmessage = (ev) => {
      try {
        onMessage(JSON.parse(ev.data));
      } catch (err) {
        console.warn("unreadable live message", err);
      }
    };
    ws.onclose = (ev) => {
      if (stopped) return;
      const denied = ev.code === 1008 && /key/.test(ev.reason);
      onState(denied ? "denied" : "closed");
      if (denied) return;
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 15000);
    };
  };
  open();
  return { stop: () => { stopped = true; ws?.close(); } };
}
