// REST calls with the signed-in key. The key lives in this tab's sessionStorage only: never in
// localStorage, a cookie or a URL; it travels in the X-Authorization header.

const KEY = "tbcoap.console.key";

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearSession() {
  sessionStorage.clear();
}

/** A failed call: the HTTP status (0 for a network failure) and the answer's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }

  toString() {
    return this.status ? `${this.message} (${this.status})` : this.message;
  }
}

/** Encode one path segment (ids, names). */
export const seg = (value) => encodeURIComponent(String(value));

/** `/api/plugins/telemetry/DEVICE/{id}` + rest. */
export const devicePath = (id, rest = "") => `/api/plugins/telemetry/DEVICE/${seg(id)}${rest}`;

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

function messageOf(response, data) {
  if (data && typeof data === "object" && typeof data.message === "string") return data.message;
  if (typeof data === "string" && data && data.length < 300) return data; // e.g. a refused claim: "FAILURE"
  return `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
}

/**
 * One REST call: the parsed JSON answer (null for an empty body), or an ApiError.
 * `key` overrides the stored key (sign-in checks a key before keeping it).
 */
export async function api(method, path, { query, body, key } = {}) {
  const useKey = key ?? storedKey();
  const headers = { Accept: "application/json" };
  if (useKey) headers["X-Authorization"] = `Bearer ${useKey}`;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(withQuery(path, query), init);
  } catch (error) {
    throw new ApiError(0, `the server could not be reached (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, messageOf(response, data));
    if (response.status === 401 && key === undefined) {
      window.dispatchEvent(new CustomEvent("tbcoap:unauthorized", { detail: error }));
    }
    throw error;
  }
  return data;
}
