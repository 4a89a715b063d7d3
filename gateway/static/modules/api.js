// Talks to the gateway: JSON over fetch with the writer's API key, and one error
// type that says what went wrong in words a writer can act on.

const KEY_STORAGE = "scriptgen.apiKey";

/** The API key kept for this browser tab only (session storage). */
export const apiKey = {
  get() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  },
  set(key) {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  },
};

/** A failed call: HTTP status, gRPC status name, the server's message, and a retry wait. */
export class ApiError extends Error {
  constructor({ status = 0, code = "", reason = "", message, retryAfter = null, violations = [] }) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.reason = reason;
    this.retryAfter = retryAfter;
    this.violations = violations;
  }

  /** A sentence for the writer, e.g. for a 429 how long to wait. */
  describe() {
    if (this.status === 0) return this.message;
    if (this.status === 401) return "Please sign in: the server did not accept your API key.";
    if (this.status === 403) return "Your API key may not do this.";
    if (this.status === 404 && this.reason === "ROUTE_NOT_FOUND") {
      return "This server does not offer that feature (no such route). It may need an update.";
    }
    if (this.status === 404) return `Not found: ${this.message}`;
    if (this.status === 429) {
      const wait = this.retryAfter === null ? "a moment" : plural(this.retryAfter, "second");
      return `Too many requests. Please wait ${wait} and try again.`;
    }
    if (this.status === 503) return "The service is not available right now. Please try again soon.";
    const fields = this.violations.map((v) => `${v.field}: ${v.description}`).join("; ");
    return fields ? `${this.message} (${fields})` : this.message;
  }
}

function plural(count, unit) {
  return `${count} ${unit}${count === 1 ? "" : "s"}`;
}

/** Headers every request carries: the API key when the writer gave one. */
export function authHeaders() {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

const listeners = { unauthorized: [] };

/** Run `listener` whenever the server answers 401. */
export function onUnauthorized(listener) {
  listeners.unauthorized.push(listener);
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = (body && body.error) || {};
  const violations = [];
  let reason = "";
  for (const detail of error.details || []) {
    for (const violation of detail.fieldViolations || []) violations.push(violation);
    if (detail.reason) reason = detail.reason;
  }
  const retryHeader = response.headers.get("Retry-After");
  const retryAfter = retryHeader !== null && /^\d+$/.test(retryHeader) ? Number(retryHeader) : null;
  return new ApiError({
    status: response.status,
    code: error.status || "",
    reason,
    message: error.message || response.statusText || `HTTP ${response.status}`,
    retryAfter,
    violations,
  });
}

/** fetch() with the key; an unreachable server is an ApiError with status 0. */
export async function send(method, url, { body, headers = {} } = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    const message = navigator.onLine
      ? "Cannot reach the server. Check your connection and try again."
      : "You are offline. Reconnect to the network and try again.";
    throw new ApiError({ status: 0, code: "UNAVAILABLE", message });
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (error.status === 401) for (const listener of listeners.unauthorized) listener(error);
    throw error;
  }
  return response;
}

/** A JSON call; answers the parsed body (or null for an empty one). */
export async function call(method, url, body, headers) {
  const response = await send(method, url, { body, headers });
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Every item of a paginated list, following nextPageToken; `field` may name alternatives. */
export async function listAll(url, ...fields) {
  const items = [];
  let token = "";
  do {
    const page = new URL(url, location.href);
    page.searchParams.set("pageSize", "100");
    if (token) page.searchParams.set("pageToken", token);
    const reply = await call("GET", page.pathname + page.search);
    const field = fields.find((name) => Array.isArray(reply[name]));
    items.push(...(field ? reply[field] : []));
    token = reply.nextPageToken || "";
  } while (token);
  return items;
}

/** The id at the end of a resource name: "projects/p1/episodes/3" → "3". */
export function lastId(name) {
  return name.slice(name.lastIndexOf("/") + 1);
}
