// The device list: search, server-side paging, activity and owner; the admin creates and deletes
// devices, a customer claims them. Each listed device's state (active, last activity) follows a
// live subscription of its server attributes; the page is read again every 10 s only while the
// live socket is down.

import { api, seg } from "./api.js";
import { badge, busy, dataTable, field, formatTime, h, newestWins, notice, pager, showError, syncRows } from "./dom.js";
import { profileNames } from "./profiles.js";
import { live } from "./live.js";

const FALLBACK_MS = 10000;

const SORTS = [
  ["createdTime:DESC", "Newest first"],
  ["createdTime:ASC", "Oldest first"],
  ["name:ASC", "Name A to Z"],
  ["name:DESC", "Name Z to A"],
];
const SIZES = [10, 20, 50, 100];
const state = { text: "", page: 0, pageSize: 20, sort: SORTS[0][0] }; // kept while the tab lives

export function devicesView(view, ctx, life) {
  const columns = ["Name", "Type", "Label", "State", "Last activity", "Power", "Owner"];
  if (ctx.admin) columns.push("Actions");
  const list = dataTable("devices-table", "Devices", columns);
  const summary = h("p", { class: "summary", id: "devices-summary", "aria-live": "polite" });
  const message = notice("devices-notice"); // what a row's Delete did
  const pages = pager("Pages of devices", (page) => { state.page = page; load(); });

  // search, sort and page size: one form, submitted with Enter or the button
  const search = field("device-search", "Search by name", { type: "search", value: state.text, autocomplete: "off" });
  const sort = field("device-sort", "Sort", {}, "select");
  sort.input.append(...SORTS.map(([value, text]) => h("option", { value, selected: value === state.sort }, text)));
  const size = field("device-page-size", "Per page", {}, "select");
  size.input.append(...SIZES.map((n) => h("option", { value: n, selected: n === state.pageSize }, String(n))));
  const searchForm = h("form", { role: "search", class: "row", "aria-label": "Find devices" },
    search.el, sort.el, size.el, h("button", { type: "submit" }, "Search"),
    h("button", { type: "button", onclick: () => load() }, "Refresh"));
  const apply = () => {
    state.text = search.input.value.trim();
    state.sort = sort.input.value;
    state.pageSize = Number(size.input.value);
    state.page = 0;
    load();
  };
  searchForm.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  sort.input.addEventListener("change", apply);
  size.input.addEventListener("change", apply);

  let shown = []; // the devices of the page shown
  const following = new Map(); // device id -> cmdId of its state's subscription
  life.onEnd(() => { for (const cmdId of following.values()) live.unsubscribe(cmdId); following.clear(); });
  const draw = () => syncRows(list.tbody, shown, (device) => device.id.id, row, columns.length,
    state.text ? "No device matches." : "No devices yet.");

  /** Follow the state of exactly the devices shown. */
  function follow(devices) {
    const ids = new Set(devices.map((device) => device.id.id));
    for (const [id, cmdId] of following) {
      if (!ids.has(id)) {
        live.unsubscribe(cmdId);
        following.delete(id);
      }
    }
    for (const id of ids) {
      if (following.has(id)) continue;
      following.set(id, live.subscribe({ type: "ATTRIBUTES", entityType: "DEVICE", entityId: id,
        scope: "SERVER_SCOPE", keys: "active,lastActivityTime" }, (update) => stateChanged(id, update)));
    }
  }

  function stateChanged(id, update) {
    if (!life.alive || update.errorCode || !update.data) return;
    const device = shown.find((d) => d.id.id === id);
    if (!device) return;
    const newest = (key) => { const points = update.data[key]; return points && points.length ? points[points.length - 1][1] : null; };
    if (newest("active") !== null) device.active = newest("active") === "true";
    if (newest("lastActivityTime") !== null) device.lastActivityTime = Number(newest("lastActivityTime"));
    draw();
  }

  const order = newestWins();
  async function load() {
    const ticket = order.start();
    const [sortProperty, sortOrder] = state.sort.split(":");
    const path = ctx.admin ? "/api/tenant/deviceInfos" : `/api/customer/${seg(ctx.customerId)}/deviceInfos`;
    const query = { pageSize: state.pageSize, page: state.page, textSearch: state.text, sortProperty, sortOrder };
    try {
      const page = await api("GET", path, { query });
      if (!life.alive || !order.fresh(ticket)) return;
      if (state.page > 0 && state.page >= page.totalPages) { // e.g. the last one of a page deleted
        state.page = Math.max(0, page.totalPages - 1);
        return load();
      }
      shown = page.data;
      draw();
      follow(shown);
      const n = page.totalElements;
      summary.textContent = `${n} device${n === 1 ? "" : "s"}${state.text ? ` matching "${state.text}"` : ""}` +
        ` · page ${state.page + 1} of ${Math.max(1, page.totalPages)}`;
      pages.update(state.page, page.totalPages);
    } catch (error) {
      if (life.alive) showError("Loading devices", error);  // not on the page the user went on to
    }
  }

  function row(device) {
    const id = device.id.id;
    const owner = device.customerId ? device.customerTitle || device.customerId.id : "none";
    const cells = [
      h("th", { scope: "row" }, h("a", { href: `#/device/${seg(id)}` }, device.name)),
      h("td", null, device.type),
      h("td", null, device.label || ""),
      h("td", null, badge(device.active, "Active", "Inactive")),
      h("td", null, formatTime(device.lastActivityTime)),
      h("td", { class: "power" }, device.powerMode || "none"),
      h("td", null, owner),
    ];
    if (ctx.admin) {
      const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${device.name}` }, "Delete");
      remove.addEventListener("click", async () => {
        message.clear();
        if (await deleteDevice(device, remove, message)) {
          message.ok(`Device "${device.name}" deleted.`);
          await load();
        }
      });
      cells.push(h("td", null, remove));
    }
    return h("tr", { dataset: { deviceId: id } }, cells);
  }

  view.append(h("h1", { tabindex: "-1" }, "Devices"));
  if (ctx.admin) view.append(createForm(load));
  else view.append(claimForm(load));
  view.append(searchForm, summary, message.el, list.el, pages.el);
  load();
  life.every(FALLBACK_MS, load, true);
}

/** Delete after a confirmation: true once deleted; a failure is told in `message` (a notice). */
export async function deleteDevice(device, button, message) {
  if (!confirm(`Delete the device "${device.name}" with its telemetry, attributes and RPCs?`)) return false;
  return busy(button, async () => {
    try {
      await api("DELETE", `/api/device/${seg(device.id.id)}`);
      return true;
    } catch (error) {
      message.error("Deleting the device", error);
      return false;
    }
  });
}

function createForm(reload) {
  const name = field("new-device-name", "Name", { required: true, maxlength: 255, autocomplete: "off" });
  const type = field("new-device-type", "Type (profile)", { list: "profile-names", maxlength: 255,
    placeholder: "default", autocomplete: "off" });
  const label = field("new-device-label", "Label", { maxlength: 255, autocomplete: "off" });
  const names = h("datalist", { id: "profile-names" });
  const create = h("button", { type: "submit", id: "create-device" }, "Create device");
  const message = notice("new-device-notice");
  const form = h("form", { class: "card", "aria-labelledby": "new-device-h" },
    h("h2", { id: "new-device-h" }, "New device"),
    h("div", { class: "row" }, name.el, type.el, label.el, names, create), message.el);
  profileNames().then((list) => names.append(...list.map((n) => h("option", { value: n }))), () => {});
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { name: name.input.value.trim() };
    if (type.input.value.trim()) body.type = type.input.value.trim();
    if (label.input.value.trim()) body.label = label.input.value.trim();
    message.clear();
    busy(create, async () => {
      try {
        const device = await api("POST", "/api/device", { body });
        form.reset();
        message.ok(`Device "${device.name}" created: `, h("a", { href: `#/device/${seg(device.id.id)}` }, "open its page"), ".");
        return true;
      } catch (error) {
        message.error("Creating the device", error);
        return false;
      }
    }).then((created) => {
      if (!created) return;
      state.page = 0;
      reload();
    });
  });
  return form;
}

const CLAIM_REFUSALS = {
  FAILURE: "no claim request from the device, it expired, or the secret is wrong (FAILURE)",
  CLAIMED: "the device already has an owner (CLAIMED)",
};

function claimForm(reload) {
  const name = field("claim-name", "Device name", { required: true, autocomplete: "off" });
  const secret = field("claim-secret", "Secret key", { type: "password", autocomplete: "off" });
  const claim = h("button", { type: "submit", id: "claim-device" }, "Claim device");
  const message = notice("claim-notice");
  const form = h("form", { class: "card", "aria-labelledby": "claim-h" },
    h("h2", { id: "claim-h" }, "Claim a device"),
    h("p", { class: "hint" }, "The device asks to be claimed first (POST /api/v1/TOKEN/claim with a secret)."),
    h("div", { class: "row" }, name.el, secret.el, claim), message.el);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    message.clear();
    busy(claim, async () => {
      try {
        const answer = await api("POST", `/api/customer/device/${seg(name.input.value.trim())}/claim`,
          { body: { secretKey: secret.input.value } });
        form.reset();
        message.ok(`Device "${answer.device.name}" claimed.`);
        return true;
      } catch (error) {
        if (CLAIM_REFUSALS[error.message]) error.message = CLAIM_REFUSALS[error.message];
        message.error("Claiming the device", error);
        return false;
      }
    }).then((claimed) => {
      if (!claimed) return;
      state.page = 0;
      reload();
    });
  });
  return form;
}
