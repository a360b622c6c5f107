// Attributes of the three scopes: CLIENT_SCOPE read-only; SHARED_SCOPE and SERVER_SCOPE editable
// by the admin (a key with a JSON or text value, or deleted) and read-only for a customer. The
// server's own SERVER_SCOPE attributes are marked as such and offer no Edit or Delete. Each scope
// shows a page of its keys (PAGE_SIZE, in key order; the server's own first), never all of them.

import { api, devicePath } from "./api.js";
import { busy, dataTable, field, formatTime, formatValue, h, newestWins, notice, pager, showError, syncRows } from "./dom.js";

const PAGE_SIZE = 50;

// [scope, title, hint when the key may edit it, hint when it may not]
const SCOPES = [
  ["CLIENT_SCOPE", "Client attributes", null, "Written by the device; read-only here."],
  ["SHARED_SCOPE", "Shared attributes", "Written here, read and observed by the device.",
    "Written by the administrator, read and observed by the device; read-only with this key."],
  ["SERVER_SCOPE", "Server attributes",
    "Written here, never seen by the device. Those marked \u201ckept by the server\u201d are the server's own.",
    "Written by the administrator and the server, never seen by the device; read-only with this key."],
];

// SERVER_SCOPE attributes the server writes itself (ThingsBoard's names for a device's activity):
// rewritten as the device is heard from, so an edit here would not last.
export const SERVER_KEPT = new Set(["active", "lastActivityTime", "lastConnectTime", "lastDisconnectTime",
  "inactivityAlarmTime"]);
// Set by provisioning; deleting it lets the device provision again, so Delete stays.
const PROVISION_STATE = "provisionState";

/** `onServer(list)` receives SERVER_SCOPE's attributes at each refresh (the device's activity). */
export function attributesSection(id, ctx, life, onServer) {
  const scopes = SCOPES.map(([scope, title, editHint, readHint]) => {
    const editable = ctx.admin && editHint !== null;
    return scopeBlock(id, scope, title, editable ? editHint : readHint, editable, life);
  });
  const el = h("section", { class: "card", "aria-labelledby": "attributes-h" },
    h("h2", { id: "attributes-h" }, "Attributes"), scopes.map((s) => s.el));
  const refresh = async () => {
    await Promise.all([...scopes.map((s) => s.refresh()), activity()]);
  };
  // the device's activity, whatever page of SERVER_SCOPE is shown
  const activity = async () => {
    try {
      const list = await api("GET", devicePath(id, "/values/attributes/SERVER_SCOPE"),
        { query: { keys: "active,lastActivityTime" } });
      if (life.alive) onServer(list);
    } catch (error) {
      if (life.alive) showError("Reading the device's activity", error);
    }
  };
  for (const s of scopes) s.reload = refresh;
  return { el, refresh };
}

/** What the server keeps of a SERVER_SCOPE attribute: "kept by the server", "set by provisioning" or null. */
function keptBy(scope, key) {
  if (scope !== "SERVER_SCOPE") return null;
  if (SERVER_KEPT.has(key)) return "kept by the server";
  if (key === PROVISION_STATE) return "set by provisioning";
  return null;
}

function scopeBlock(id, scope, title, hint, editable, life) {
  const headId = `attr-${scope}-h`;
  const columns = editable ? ["Key", "Value", "Updated", "Actions"] : ["Key", "Value", "Updated"];
  const list = dataTable(`attributes-${scope}`, title, columns);
  const message = notice(`attr-${scope}-notice`);
  const block = { scope, el: null, reload: null };
  const order = newestWins();
  let current = 0;
  const pages = pager(`Pages of ${title.toLowerCase()}`, (page) => { current = page; block.refresh(); });
  pages.el.id = `attr-${scope}-pages`;
  const pagesBox = h("div"); // holds the pager when there is more than one page
  const count = h("p", { class: "hint", id: `attr-${scope}-count` });

  let form = null;
  let keyInput = null;
  let valueInput = null;
  let typeInput = null;
  if (editable) {
    const key = field(`attr-${scope}-key`, "Key", { required: true, maxlength: 255, autocomplete: "off" });
    const value = field(`attr-${scope}-value`, "Value", { autocomplete: "off", spellcheck: "false",
      "aria-describedby": message.el.id });
    const type = field(`attr-${scope}-type`, "Value is", {}, "select");
    type.input.append(h("option", { value: "json" }, "JSON (number, true, {...})"), h("option", { value: "text" }, "Text"));
    [keyInput, valueInput, typeInput] = [key.input, value.input, type.input];
    const save = h("button", { type: "submit", id: `attr-${scope}-save` }, "Save");
    form = h("form", { "aria-label": `Add or edit a ${title.toLowerCase().replace(/s$/, "")}` },
      h("div", { class: "row" }, key.el, value.el, type.el, save), message.el);
    valueInput.addEventListener("input", () => valueInput.removeAttribute("aria-invalid"));
    typeInput.addEventListener("change", () => valueInput.removeAttribute("aria-invalid"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const sent = { key: keyInput.value, value: valueInput.value, type: typeInput.value };
      let parsed = sent.value;
      if (sent.type === "json") {
        try {
          parsed = JSON.parse(sent.value);
        } catch (error) {
          message.error("The value is not JSON", `${error.message}; choose "Text" to store it as a string`);
          valueInput.setAttribute("aria-invalid", "true");
          valueInput.focus();
          return;
        }
      }
      const name = sent.key.trim();
      message.clear();
      busy(save, async () => {
        try {
          await api("POST", devicePath(id, `/${scope}`), { body: { [name]: parsed } });
        } catch (error) {
          message.error("Saving the attribute", error);
          return;
        }
        // empty the form for the next one, unless the user already started typing it
        if (keyInput.value === sent.key && valueInput.value === sent.value && typeInput.value === sent.type) {
          form.reset();
        }
        message.ok(`Attribute "${name}" saved.`);
      }).then(() => life.alive && block.reload());
    });
  }

  function edit(attribute) {
    keyInput.value = attribute.key;
    const text = typeof attribute.value === "string";
    typeInput.value = text ? "text" : "json";
    valueInput.value = text ? attribute.value : JSON.stringify(attribute.value);
    valueInput.removeAttribute("aria-invalid");
    message.clear();
    valueInput.focus();
  }

  async function remove(attribute, button) {
    const effect = attribute.key === PROVISION_STATE ? " The device may then provision again." : "";
    if (!confirm(`Delete the attribute "${attribute.key}" from ${title.toLowerCase()}?${effect}`)) return;
    message.clear();
    await busy(button, async () => {
      try {
        await api("DELETE", devicePath(id, `/${scope}`), { query: { keys: attribute.key } });
        message.ok(`Attribute "${attribute.key}" deleted.`);
      } catch (error) {
        message.error("Deleting the attribute", error);
      }
    });
    if (life.alive) await block.reload();
  }

  function row(attribute) {
    const kept = keptBy(scope, attribute.key);
    const cells = [
      h("th", { scope: "row" }, attribute.key, kept ? h("span", { class: "badge kept" }, kept) : null),
      h("td", { class: "value" }, formatValue(attribute.value)),
      h("td", null, formatTime(attribute.lastUpdateTs)),
    ];
    if (editable) {
      const actions = h("td", { class: "actions" });
      if (!kept) {
        actions.append(h("button", { type: "button", "aria-label": `Edit ${attribute.key}`, onclick: () => edit(attribute) }, "Edit"));
      }
      if (!SERVER_KEPT.has(attribute.key)) {
        const label = kept ? `Delete ${attribute.key} (the device may then provision again)` : `Delete ${attribute.key}`;
        const del = h("button", { type: "button", class: "danger", "aria-label": label }, "Delete");
        del.addEventListener("click", () => remove(attribute, del));
        actions.append(del);
      }
      cells.push(actions);
    }
    return h("tr", { dataset: kept ? { key: attribute.key, kept } : { key: attribute.key } }, cells);
  }

  block.refresh = async () => {
    try {
      const ticket = order.start();
      const path = devicePath(id, `/values/attributes/${scope}`);
      let page = await api("GET", path, { query: { pageSize: PAGE_SIZE, page: current } });
      if (current > 0 && current >= page.totalPages) { // the keys of the last page were deleted
        current = Math.max(0, page.totalPages - 1);
        page = await api("GET", path, { query: { pageSize: PAGE_SIZE, page: current } });
      }
      if (!life.alive || !order.fresh(ticket)) return null;
      syncRows(list.tbody, page.data, (a) => a.key, row, columns.length, "None.");
      pages.update(current, page.totalPages);
      if (page.totalPages > 1) pagesBox.append(pages.el);
      else pages.el.remove();
      count.textContent = page.totalElements > PAGE_SIZE ? `${page.totalElements} keys, ${PAGE_SIZE} a page.` : "";
      return page.data;
    } catch (error) {
      if (life.alive) showError(`Reading ${title.toLowerCase()}`, error);
      return null;
    }
  };

  block.el = h("section", { class: "scope", "aria-labelledby": headId },
    h("h3", { id: headId }, title), h("p", { class: "hint", id: `attr-${scope}-hint` }, hint),
    count, h("div", { "aria-live": "polite" }, list.el), pagesBox, form);
  return block;
}
