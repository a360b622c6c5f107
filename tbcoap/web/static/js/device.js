// One device's page: its facts and owner, its token (admin), latest telemetry, the chart,
// attributes and RPC sections. Telemetry and attributes follow live subscriptions (live.js) and
// are read again every 5 s only while the live socket is down.

import { api, devicePath, seg } from "./api.js";
import { append, badge, busy, clear, dataTable, field, flashStatus, formatTime, h, newestWins, notice, pager, randomToken, showError, syncRows } from "./dom.js";
import { deleteDevice } from "./devices.js";
import { chartSection } from "./chart.js";
import { attributesSection } from "./attributes.js";
import { rpcSection } from "./rpc.js";
import { powerFact, powerSection } from "./power.js";
import { follow, live, throttle } from "./live.js";

export const REFRESH_MS = 5000;
const PAGE_SIZE = 50; // keys a page of latest telemetry or attributes shows

export async function deviceView(view, ctx, life, id) {
  const title = h("h1", { tabindex: "-1", id: "device-title" }, "Device");
  view.append(h("p", null, h("a", { href: "#/devices" }, "← All devices")), title);
  let device;
  try {
    device = await api("GET", `/api/device/${seg(id)}`);
  } catch (error) {
    if (!life.alive) return;
    title.textContent = error.status === 404 ? "Device not found" : "Device unavailable";
    view.append(h("p", null, error.status === 404
      ? "No device with this id, or not one this key may see."
      : "The device could not be loaded."));
    showError("Loading the device", error);
    return;
  }
  if (!life.alive) return;
  title.textContent = device.name;
  document.title = `${device.name} · tbcoap console`;
  life.onEnd(() => { document.title = "tbcoap console"; });

  const facts = factsSection(device, ctx);
  view.append(facts.el);
  if (ctx.admin) view.append(credentialsSection(device), powerSection(device));
  const chart = chartSection(id, life);
  const latest = latestSection(id, life, (points) => chart.offer(points));
  view.append(latest.el, chart.el);
  const attributes = attributesSection(id, ctx, life, (server) => facts.activity(server));
  view.append(attributes.el);
  if (ctx.admin) view.append(rpcSection(id, life));

  const device_ = { entityType: "DEVICE", entityId: id };
  // a subscription the server refuses (its first values over what one update may hold, for a
  // device with very many keys) leaves the page polling, as while the socket is down
  let followed = true;
  const refused = () => { followed = false; };
  follow(life, { type: "TIMESERIES", ...device_ }, (data) => {
    latest.apply(data);
    chart.stored(Object.keys(data));
  }, refused);
  const rereadAttributes = throttle(500, () => attributes.refresh());
  follow(life, { type: "ATTRIBUTES", ...device_ }, () => rereadAttributes(), refused);
  await Promise.all([latest.refresh(), attributes.refresh()]);
  life.every(REFRESH_MS, () => (live.up && followed ? null : Promise.all([latest.refresh(), attributes.refresh()])));
}

function factsSection(device, ctx) {
  const state = h("dd", { id: "device-state" });
  const last = h("dd", { id: "device-last-activity" });
  const owner = h("dd", { id: "device-owner" });
  const rows = [
    ["Id", h("dd", null, h("code", null, device.id.id))],
    ["Type (profile)", h("dd", null, device.type)],
    ["Label", h("dd", null, device.label || "none")],
    ["Created", h("dd", null, formatTime(device.createdTime))],
    ["Owner", owner],
    ["State", state],
    ["Last activity", last],
    ["Power mode", powerFact(device, ctx)],
  ];
  const el = h("section", { "aria-label": "Device details" },
    h("dl", { class: "facts" }, rows.map(([term, dd]) => [h("dt", null, term), dd])), ownerActions(device, ctx, showOwner));
  function showOwner(customerId, title) {
    if (!customerId) owner.textContent = "none (free device)";
    else if (title) owner.textContent = `${title} (${customerId})`;
    else if (!ctx.admin) owner.textContent = `${ctx.name} (${customerId})`;
    else {
      owner.textContent = customerId;
      api("GET", `/api/customer/${seg(customerId)}`).then((customer) => {
        owner.textContent = `${customer.title} (${customerId})`;
      }, () => {});
    }
  }
  showOwner(device.customerId && device.customerId.id);
  return {
    el,
    /** Update State and Last activity from the SERVER_SCOPE attributes. */
    activity(server) {
      const value = (key) => (server.find((a) => a.key === key) || {}).value;
      const active = value("active") === true;
      if (state.dataset.active !== String(active)) {
        state.dataset.active = String(active);
        clear(state).append(badge(active, "Active", "Inactive"));
      }
      last.textContent = formatTime(value("lastActivityTime"));
    },
  };
}

/** The admin gives the device to a customer or frees it; its customer releases it (unclaims). */
function ownerActions(device, ctx, showOwner) {
  const message = notice("owner-notice");
  const box = h("div", { id: "owner-actions" });
  if (!ctx.admin) {
    const release = h("button", { type: "button", id: "release-device" }, "Release device");
    release.addEventListener("click", () => {
      if (!confirm(`Release "${device.name}"? It will no longer be yours (a device can be claimed again).`)) return;
      message.clear();
      busy(release, async () => {
        try {
          await api("DELETE", `/api/customer/device/${seg(device.name)}/claim`);
          flashStatus(`Device "${device.name}" released.`); // told on the device list
          location.hash = "#/devices";
        } catch (error) {
          message.error("Releasing the device", error);
        }
      });
    });
    append(box, [h("div", { class: "row" }, release), message.el]);
    return box;
  }
  const customer = field("owner-customer", "Give to customer", {}, "select");
  const assign = h("button", { type: "button", id: "assign-device" }, "Assign");
  const unassign = h("button", { type: "button", id: "unassign-device" }, "Unassign");
  unassign.hidden = !device.customerId;
  api("GET", "/api/customers", { query: { pageSize: 1000, page: 0 } }).then((page) => {
    customer.input.append(...page.data.map((c) => h("option", { value: c.id.id }, c.title)));
    if (!page.data.length) customer.input.append(h("option", { value: "", disabled: true, selected: true }, "no customers yet"));
    assign.disabled = !page.data.length;
  }, (error) => message.error("Reading the customers", error));
  const change = (button, method, path, done) => {
    message.clear();
    busy(button, async () => {
      try {
        const changed = await api(method, path);
        const owner = changed.customerId && changed.customerId.id;
        showOwner(owner, owner && customer.input.selectedOptions[0] ? customer.input.selectedOptions[0].text : null);
        unassign.hidden = !owner;
        message.ok(done(owner));
      } catch (error) {
        message.error("Changing the owner", error);
      }
    });
  };
  assign.addEventListener("click", () => change(assign, "POST",
    `/api/customer/${seg(customer.input.value)}/device/${seg(device.id.id)}`,
    () => `"${device.name}" now belongs to ${customer.input.selectedOptions[0].text}.`));
  unassign.addEventListener("click", () => change(unassign, "DELETE", `/api/customer/device/${seg(device.id.id)}`,
    () => `"${device.name}" belongs to no customer now.`));
  append(box, [h("div", { class: "row" }, customer.el, assign, unassign), message.el]);
  return box;
}

function credentialsSection(device) {
  const id = device.id.id;
  const shown = h("p", { id: "device-token-box", class: "secret-box", hidden: true });
  const show = h("button", { type: "button", id: "show-token", "aria-expanded": "false" }, "Show token");
  const rotate = h("button", { type: "button", id: "rotate-token" }, "Rotate token");
  const remove = h("button", { type: "button", id: "delete-device", class: "danger" }, "Delete device");
  const message = notice("credentials-notice");

  const display = (credentials) => {
    const kind = credentials.credentialsType;
    append(clear(shown), kind === "ACCESS_TOKEN"
      ? ["Access token: ", h("code", { id: "device-token", class: "token" }, credentials.credentialsId)]
      : kind === "PSK"
        ? ["Pre-shared key (CoAPS), identity: ", h("code", { id: "device-psk-identity", class: "token" }, credentials.credentialsId),
          " (the key is never shown: replace it if it is lost)"]
        : ["X.509 certificate, SHA3-256 digest: ", h("code", { class: "token" }, credentials.credentialsId)]);
    shown.hidden = false;
    show.textContent = "Hide token";
    show.setAttribute("aria-expanded", "true");
  };
  show.addEventListener("click", () => {
    if (!shown.hidden) {
      shown.hidden = true;
      clear(shown);
      show.textContent = "Show token";
      show.setAttribute("aria-expanded", "false");
      return;
    }
    message.clear();
    busy(show, async () => {
      try {
        display(await api("GET", `/api/device/${seg(id)}/credentials`));
      } catch (error) {
        message.error("Reading the token", error);
      }
    });
  });
  rotate.addEventListener("click", () => {
    if (!confirm(`Give "${device.name}" a new random token? The old one stops working at once.`)) return;
    message.clear();
    busy(rotate, async () => {
      try {
        display(await api("POST", "/api/device/credentials", { body: {
          deviceId: { entityType: "DEVICE", id }, credentialsType: "ACCESS_TOKEN", credentialsId: randomToken() } }));
        message.ok("The device has a new token.");
      } catch (error) {
        message.error("Rotating the token", error);
      }
    });
  });
  remove.addEventListener("click", async () => {
    message.clear();
    if (await deleteDevice(device, remove, message)) {
      flashStatus(`Device "${device.name}" deleted.`); // told on the device list
      location.hash = "#/devices";
    }
  });
  return h("section", { class: "card", "aria-labelledby": "credentials-h" },
    h("h2", { id: "credentials-h" }, "Access token"),
    h("p", { class: "hint" }, "The device puts it in its CoAP paths: /api/v1/TOKEN/telemetry."),
    h("div", { class: "row" }, show, rotate, remove), message.el, shown, pskForm(device, display));
}

/** Make a pre-shared key the device's credential (CoAPS with PSK; the token stops working). */
function pskForm(device, display) {
  const identity = field("psk-identity", "Identity", { required: true, maxlength: 128, autocomplete: "off",
    spellcheck: "false" });
  const key = field("psk-key", "Key (hex, 16 to 64 bytes)", { required: true, autocomplete: "off", spellcheck: "false",
    pattern: "([0-9a-fA-F]{2}){16,64}", title: "32 to 128 hex digits" });
  const save = h("button", { type: "submit", id: "psk-save" }, "Set pre-shared key");
  const message = notice("psk-notice");
  const form = h("form", { id: "psk-form", "aria-labelledby": "psk-h" },
    h("h3", { id: "psk-h" }, "Pre-shared key (CoAPS)"),
    h("p", { class: "hint" }, "A device on CoAPS may prove itself with a key it shares with the server instead of a "
      + "token (e.g. coap-client-openssl -u IDENTITY -k KEY, on paths without a token). The key is sent once and "
      + "never shown again."),
    h("div", { class: "row" }, identity.el, key.el, save), message.el);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = identity.input.value;
    const hex = key.input.value.trim();
    if (!confirm(`Make a pre-shared key with identity "${name}" the credential of "${device.name}"? `
      + "Its token (or certificate) stops working at once.")) return;
    message.clear();
    busy(save, async () => {
      try {
        display(await api("POST", "/api/device/credentials", { body: {
          deviceId: { entityType: "DEVICE", id: device.id.id }, credentialsType: "PSK", credentialsId: name,
          credentialsValue: hex } }));
        key.input.value = ""; // not kept in the page
        message.ok(`The device's credential is the pre-shared key of identity "${name}".`);
      } catch (error) {
        message.error("Setting the pre-shared key", error);
      }
    });
  });
  return form;
}

/** The latest values of a page of the device's keys (PAGE_SIZE, in key order); a live update of a
 * key not on the page reads the page again (a new key may belong on it), at most once a second. */
function latestSection(id, life, onPage) {
  const list = dataTable("latest-telemetry", "Latest telemetry", ["Key", "Value", "Time"]);
  const stamp = h("p", { class: "hint", id: "latest-refreshed" });
  const count = h("p", { class: "hint", id: "latest-count" });
  const pages = pager("Pages of latest telemetry", (page) => { current = page; reread(); });
  pages.el.id = "latest-pages";
  const pagesBox = h("div"); // holds the pager when there is more than one page
  // only the table is live, and only the rows of changed values are rebuilt
  const live = h("div", { "aria-live": "polite" }, list.el);
  const values = new Map(); // key -> {ts, value}: the newest known, of the keys on the page
  const elsewhere = new Set(); // keys of live updates known to be on another page
  const order = newestWins();
  let current = 0;
  let how = "";
  const show = () => {
    const points = [...values.keys()].sort().map((key) => ({ key, ...values.get(key) }));
    syncRows(list.tbody, points, (point) => point.key,
      (point) => h("tr", { dataset: { key: point.key } },
        h("th", { scope: "row" }, point.key), h("td", { class: "value" }, String(point.value)),
        h("td", null, formatTime(point.ts))), 3, "No telemetry yet.");
    stamp.textContent = `${how} ${new Date().toLocaleTimeString()}.`;
  };
  async function read(why) {
    try {
      const ticket = order.start();
      let page = await api("GET", devicePath(id, "/values/timeseries"), { query: { pageSize: PAGE_SIZE, page: current } });
      if (current > 0 && current >= page.totalPages) { // the keys of the last page were deleted
        current = Math.max(0, page.totalPages - 1);
        page = await api("GET", devicePath(id, "/values/timeseries"), { query: { pageSize: PAGE_SIZE, page: current } });
      }
      if (!life.alive || !order.fresh(ticket)) return;
      values.clear();
      elsewhere.clear();
      for (const point of page.data) values.set(point.key, { ts: point.ts, value: point.value });
      pages.update(current, page.totalPages);
      if (page.totalPages > 1) pagesBox.append(pages.el);
      else pages.el.remove();
      count.textContent = page.totalElements > PAGE_SIZE
        ? `${page.totalElements} keys, ${PAGE_SIZE} a page.` : "";
      if (why) how = why;
      show();
      onPage(page.data);
    } catch (error) {
      if (life.alive) showError("Reading the latest telemetry", error);
    }
  }
  const reread = throttle(1000, () => read());
  return {
    el: h("section", { class: "card", "aria-labelledby": "latest-h" },
      h("h2", { id: "latest-h" }, "Latest telemetry"), stamp, count, live, pagesBox),
    refresh: () => read(`Read every ${REFRESH_MS / 1000} s while live updates are down; last read`),
    /** A live update's data, {key: [[ts, "value"], ...]}: the newest point of each key is shown. */
    apply(data) {
      let unknown = false;
      for (const [key, points] of Object.entries(data)) {
        if (!values.has(key)) {
          if (!elsewhere.has(key)) unknown = true;
          elsewhere.add(key);
          continue;
        }
        for (const [ts, value] of points) {
          const known = values.get(key);
          if (ts >= known.ts) values.set(key, { ts, value });
        }
      }
      how = "Live: updated as the device sends; last change";
      show();
      if (unknown) reread();
    },
  };
}
