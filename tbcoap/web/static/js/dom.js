// DOM helpers. Everything is built with createElement and text nodes: data never goes through
// innerHTML, so a device named "<img src=x onerror=...>" stays text.

const PROPERTIES = new Set(["value", "checked", "selected", "indeterminate"]);

/** h("a", {href: "#/x", class: "c", onclick: fn}, "text", child, [more]) */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (PROPERTIES.has(name)) el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append nodes, text, or (nested) arrays of them. */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export const byId = (id) => document.getElementById(id);

// -- messages ------------------------------------------------------------------------------
// A form's outcome goes beside the form (notice); the alert and status regions at the top keep
// what belongs to no control (a page that failed to load, a key no longer accepted, signed out).
// Route changes clear the top regions; a notice goes with its page.

const MAX_ALERTS = 4;

/** "<what>: <message> (<status>)" */
function describe(what, error) {
  return `${what}: ${error && error.toString ? error.toString() : String(error)}`;
}

/** Show a failed call in the alert region at the top. Repeats replace. */
export function showError(what, error) {
  const region = byId("alerts");
  const text = describe(what, error);
  for (const item of region.querySelectorAll(".alert")) {
    if (item.dataset.text === text) item.remove();
  }
  const item = h("div", { class: "alert", dataset: { text, status: error && error.status } },
    h("span", { class: "alert-text" }, text),
    h("button", { type: "button", class: "link", "aria-label": "Dismiss this message", onclick: () => item.remove() }, "Dismiss"));
  region.prepend(item);
  while (region.children.length > MAX_ALERTS) region.lastElementChild.remove();
}

/** A short confirmation in the status region at the top (text or nodes). */
export function showStatus(...content) {
  const region = byId("status");
  clear(region);
  if (content.some((part) => part !== "" && part !== null && part !== undefined)) region.append(h("p", null, ...content));
}

let flashed = null;

/** A confirmation for the next page only (an action that leaves its page, e.g. a deleted device). */
export function flashStatus(...content) {
  flashed = content;
}

/** Empty the top regions for a new page; a flashed confirmation is shown once. */
export function resetMessages() {
  clear(byId("alerts"));
  showStatus(...(flashed || []));
  flashed = null;
}

/**
 * The messages of one form, shown beside it: `ok(...content)` (role="status") or
 * `error(what, error)` (role="alert"); each replaces the last, `clear()` removes it.
 */
export function notice(id) {
  const status = h("div", { class: "notice-ok", role: "status" });
  const alert = h("div", { class: "notice-error", role: "alert" });
  const el = h("div", { id, class: "notice" }, status, alert);
  return {
    el,
    ok(...content) {
      clear(alert);
      append(clear(status), content);
    },
    error(what, error) {
      clear(status);
      clear(alert).textContent = describe(what, error);
    },
    clear() {
      clear(status);
      clear(alert);
    },
  };
}

// -- formatting ------------------------------------------------------------------------------

export function formatTime(ms) {
  if (ms === null || ms === undefined) return "never";
  const date = new Date(Number(ms));
  return isNaN(date) ? String(ms) : date.toLocaleString();
}

/** An attribute or RPC value as text: strings as they are, the rest as JSON. */
export function formatValue(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

export function badge(ok, yes, no) {
  return h("span", { class: ok ? "badge on" : "badge off" }, ok ? yes : no);
}

// -- building blocks ---------------------------------------------------------------------------

/** A labelled input: [label, input] in a .field; `attrs` go to the input. */
export function field(id, label, attrs = {}, tag = "input") {
  const input = h(tag, { id, ...attrs });
  return { input, el: h("div", { class: "field" }, h("label", { for: id }, label), input) };
}

/** A table in its own scrolling container; `rows(tbody)` fills it. */
export function dataTable(id, caption, headers) {
  const tbody = h("tbody");
  const table = h("table", { id },
    h("caption", { class: "sr-only" }, caption),
    h("thead", null, h("tr", null, headers.map((text) => h("th", { scope: "col" }, text)))),
    tbody);
  return { el: h("div", { class: "table-wrap" }, table), table, tbody };
}

export function emptyRow(tbody, columns, text) {
  tbody.append(h("tr", null, h("td", { colspan: columns, class: "empty" }, text)));
}

const shownRows = new WeakMap(); // <tr> -> { key, signature } of the item it shows

/**
 * Bring a table's rows in step with `items`, in their order, without rebuilding it: a row whose
 * item is unchanged stays the same element (its buttons and the focus on them stay), a changed
 * item's row is replaced, new rows are inserted and rows of items gone are removed.
 * `render(item)` builds a <tr>; `empty` is the text of the row shown when there are no items.
 */
export function syncRows(tbody, items, keyOf, render, columns, empty) {
  const existing = new Map();
  for (const row of tbody.rows) {
    const shown = shownRows.get(row);
    if (shown) existing.set(shown.key, row);
  }
  let cursor = tbody.firstElementChild;
  for (const item of items) {
    const key = keyOf(item);
    const signature = JSON.stringify(item);
    let row = existing.get(key);
    existing.delete(key);
    if (!row || shownRows.get(row).signature !== signature) {
      const fresh = render(item);
      shownRows.set(fresh, { key, signature });
      if (row) {
        if (row === cursor) cursor = fresh;
        row.replaceWith(fresh);
      }
      row = fresh;
    }
    if (row === cursor) cursor = cursor.nextElementSibling;
    else tbody.insertBefore(row, cursor);
  }
  // the rows of every item now come first: what follows is gone
  while (cursor) {
    const next = cursor.nextElementSibling;
    cursor.remove();
    cursor = next;
  }
  if (!items.length) emptyRow(tbody, columns, empty);
}

/** Previous / "page n of m" / Next. `update(page, totalPages)` after each load. */
export function pager(label, onPage) {
  let current = 0;
  const info = h("span", { class: "page-info" });
  const prev = h("button", { type: "button", onclick: () => onPage(current - 1) }, "Previous");
  const next = h("button", { type: "button", onclick: () => onPage(current + 1) }, "Next");
  const el = h("div", { class: "pager", role: "group", "aria-label": label }, prev, info, next);
  return {
    el,
    update(page, totalPages) {
      current = page;
      info.textContent = `page ${page + 1} of ${Math.max(1, totalPages)}`;
      prev.disabled = page <= 0;
      next.disabled = page + 1 >= totalPages;
    },
  };
}

/** Run `work` with `button` disabled (no double submits). */
export async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

/** A random access token: 20 URL-safe characters (no "/"). */
export function randomToken() {
  const bytes = crypto.getRandomValues(new Uint8Array(15));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/**
 * Order of overlapping loads (a timer's refresh and a user's action): `const ticket = order.start()`
 * before the call, then `if (!order.fresh(ticket)) return` after it drops an answer older than one
 * already shown.
 */
export function newestWins() {
  let started = 0;
  let applied = 0;
  return {
    start: () => ++started,
    fresh(n) {
      if (n < applied) return false;
      applied = n;
      return true;
    },
  };
}
