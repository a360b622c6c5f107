// Attributes of the three scopes: CLIENT_SCOPE read-only; SHARED_SCOPE and SERVER_SCOPE editable
// by the admin (a key with a JSON or text value, or deleted).

import { api, devicePath } from "./api.js";
import { busy, clear, dataTable, emptyRow, field, formatTime, formatValue, h, newestWins, showError, showStatus } from "./dom.js";

const SCOPES = [
  ["CLIENT_SCOPE", "Client attributes", "Written by the device; read-only here."],
  ["SHARED_SCOPE", "Shared attributes", "Written here, read and observed by the device."],
  ["SERVER_SCOPE", "Server attributes", "Written here, never seen by the device (active and lastActivityTime are the server's)."],
];

/** `onServer(list)` receives SERVER_SCOPE's attributes at each refresh (the device's activity). */
export function attributesSection(id, ctx, life, onServer) {
  const scopes = SCOPES.map(([scope, title, hint]) => scopeBlock(id, scope, title, hint, ctx.admin && scope !== "CLIENT_SCOPE", life));
  const el = h("section", { class: "card", "aria-labelledby": "attributes-h" },
    h("h2", { id: "attributes-h" }, "Attributes"), scopes.map((s) => s.el));
  const refresh = async () => {
    await Promise.all(scopes.map(async (s) => {
      const list = await s.refresh();
      if (list && s.scope === "SERVER_SCOPE") onServer(list);
    }));
  };
  for (const s of scopes) s.reload = refresh;
  return { el, refresh };
}

function scopeBlock(id, scope, title, hint, editable, life) {
  const headId = `attr-${scope}-h`;
  const columns = editable ? ["Key", "Value", "Updated", "Actions"] : ["Key", "Value", "Updated"];
  const list = dataTable(`attributes-${scope}`, title, columns);
  const block = { scope, el: null, reload: null };
  let shown = null;
  const order = newestWins();

  let form = null;
  let keyInput = null;
  let valueInput = null;
  let typeInput = null;
  if (editable) {
    const key = field(`attr-${scope}-key`, "Key", { required: true, maxlength: 255, autocomplete: "off" });
    const value = field(`attr-${scope}-value`, "Value", { autocomplete: "off", spellcheck: "false" });
    const type = field(`attr-${scope}-type`, "Value is", {}, "select");
    type.input.append(h("option", { value: "json" }, "JSON (number, true, {...})"), h("option", { value: "text" }, "Text"));
    [keyInput, valueInput, typeInput] = [key.input, value.input, type.input];
    const save = h("button", { type: "submit", id: `attr-${scope}-save` }, "Save");
    form = h("form", { class: "row", "aria-label": `Add or edit a ${title.toLowerCase().replace(/s$/, "")}` },
      key.el, value.el, type.el, save);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      let parsed = valueInput.value;
      if (typeInput.value === "json") {
        try {
          parsed = JSON.parse(valueInput.value);
        } catch (error) {
          showError("The value is not JSON", `${error.message}; choose "Text" to store it as a string`);
          return;
        }
      }
      const name = keyInput.value.trim();
      busy(save, async () => {
        try {
          await api("POST", devicePath(id, `/${scope}`), { body: { [name]: parsed } });
          form.reset();
          showStatus(`Attribute "${name}" saved.`);
          await block.reload();
        } catch (error) {
          showError("Saving the attribute", error);
        }
      });
    });
  }

  function edit(attribute) {
    keyInput.value = attribute.key;
    const text = typeof attribute.value === "string";
    typeInput.value = text ? "text" : "json";
    valueInput.value = text ? attribute.value : JSON.stringify(attribute.value);
    valueInput.focus();
  }

  async function remove(attribute, button) {
    if (!confirm(`Delete the attribute "${attribute.key}" from ${title.toLowerCase()}?`)) return;
    await busy(button, async () => {
      try {
        await api("DELETE", devicePath(id, `/${scope}`), { query: { keys: attribute.key } });
        showStatus(`Attribute "${attribute.key}" deleted.`);
        await block.reload();
      } catch (error) {
        showError("Deleting the attribute", error);
      }
    });
  }

  block.refresh = async () => {
    try {
      const ticket = order.start();
      const attributes = await api("GET", devicePath(id, `/values/attributes/${scope}`));
      if (!life.alive || !order.fresh(ticket)) return null;
      const text = JSON.stringify(attributes);
      if (text === shown) return attributes;
      shown = text;
      clear(list.tbody);
      for (const attribute of attributes) {
        const cells = [h("th", { scope: "row" }, attribute.key), h("td", { class: "value" }, formatValue(attribute.value)),
          h("td", null, formatTime(attribute.lastUpdateTs))];
        if (editable) {
          const del = h("button", { type: "button", class: "danger", "aria-label": `Delete ${attribute.key}` }, "Delete");
          del.addEventListener("click", () => remove(attribute, del));
          cells.push(h("td", { class: "actions" },
            h("button", { type: "button", "aria-label": `Edit ${attribute.key}`, onclick: () => edit(attribute) }, "Edit"), del));
        }
        list.tbody.append(h("tr", { dataset: { key: attribute.key } }, cells));
      }
      if (!attributes.length) emptyRow(list.tbody, columns.length, "None.");
      return attributes;
    } catch (error) {
      if (life.alive) showError(`Reading ${title.toLowerCase()}`, error);
      return null;
    }
  };

  block.el = h("section", { class: "scope", "aria-labelledby": headId },
    h("h3", { id: headId }, title), h("p", { class: "hint" }, hint),
    h("div", { "aria-live": "polite" }, list.el), form);
  return block;
}
