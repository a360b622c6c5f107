// Device profiles (admin): a page of them, creating one with its provisioning settings, making
// one the default (devices created without a type get it) and deleting one no device uses.

import { api, seg } from "./api.js";
import { busy, clear, dataTable, emptyRow, field, formatTime, h, newestWins, notice, pager, showError } from "./dom.js";

const TYPES = [
  ["DISABLED", "Disabled"],
  ["ALLOW_CREATE_NEW_DEVICES", "Allow creating new devices"],
  ["CHECK_PRE_PROVISIONED_DEVICES", "Check pre-provisioned devices"],
];
const state = { page: 0, pageSize: 20 };

// A profile's payload type and Protobuf schemas, in ThingsBoard's profileData.transportConfiguration.
const SCHEMAS = [
  ["deviceTelemetryProtoSchema", "Telemetry schema"],
  ["deviceAttributesProtoSchema", "Attributes schema"],
  ["deviceRpcRequestProtoSchema", "RPC request schema"],
  ["deviceRpcResponseProtoSchema", "RPC response schema"],
];

function payloadConfig(profile) {
  const transport = (profile.profileData || {}).transportConfiguration || {};
  return (transport.coapDeviceTypeConfiguration || {}).transportPayloadTypeConfiguration || {};
}

/** The payload type field and the schema fields (shown for Protobuf; empty ones take ThingsBoard's defaults). */
function payloadFields() {
  const payload = field("profile-payload", "Payload", {}, "select");
  payload.input.append(h("option", { value: "JSON" }, "JSON (and CBOR)"), h("option", { value: "PROTOBUF" }, "Protobuf"));
  const schemas = SCHEMAS.map(([key, label]) =>
    [key, field(`profile-${key}`, label, { rows: 6, spellcheck: "false", placeholder: "ThingsBoard's default" }, "textarea")]);
  const box = h("div", { class: "row", id: "profile-schemas" }, schemas.map(([, f]) => f.el));
  const sync = () => { box.hidden = payload.input.value !== "PROTOBUF"; };
  payload.input.addEventListener("change", sync);
  sync();
  const addTo = (body) => {
    if (payload.input.value !== "PROTOBUF") return;
    const config = { transportPayloadType: "PROTOBUF" };
    for (const [key, f] of schemas) if (f.input.value.trim()) config[key] = f.input.value;
    body.transportType = "COAP";
    body.profileData = { transportConfiguration: { type: "COAP",
      coapDeviceTypeConfiguration: { coapDeviceType: "DEFAULT", transportPayloadTypeConfiguration: config } } };
  };
  return { payload, box, sync, addTo };
}

/** A profile's payload type as a badge, with its schemas to unfold when Protobuf. */
function payloadCell(profile) {
  const config = payloadConfig(profile);
  if (config.transportPayloadType !== "PROTOBUF") return h("span", { class: "badge" }, "JSON");
  return h("details", { class: "schemas" }, h("summary", null, h("span", { class: "badge on" }, "Protobuf")),
    SCHEMAS.map(([key, label]) => h("div", null, h("strong", null, label), h("pre", null, config[key] || ""))));
}

/** Names of the first 1000 profiles (for the device type suggestions). */
export async function profileNames() {
  const page = await api("GET", "/api/deviceProfiles", { query: { pageSize: 1000, page: 0 } });
  return page.data.map((p) => p.name);
}

export function profilesView(view, ctx, life) {
  const name = field("profile-name", "Name", { required: true, maxlength: 255, autocomplete: "off" });
  const type = field("profile-provision-type", "Provisioning", {}, "select");
  type.input.append(...TYPES.map(([value, text]) => h("option", { value }, text)));
  const key = field("profile-provision-key", "Provision key", { maxlength: 255, autocomplete: "off" });
  const secret = field("profile-provision-secret", "Provision secret", { maxlength: 255, autocomplete: "off" });
  const create = h("button", { type: "submit", id: "create-profile" }, "Create profile");
  const message = notice("new-profile-notice");
  const list = dataTable("profiles-table", "Device profiles",
    ["Name", "Provisioning", "Provision key", "Provision secret", "Created", "Actions"]);
  const rowMessage = notice("profiles-notice"); // what a row's buttons did
  const summary = h("p", { class: "summary", id: "profiles-summary" });
  const pages = pager("Pages of device profiles", (page) => { state.page = page; load(); });

  // key and secret are needed unless provisioning is disabled
  const sync = () => {
    const needed = type.input.value !== "DISABLED";
    key.input.required = needed;
    secret.input.required = needed;
    key.el.hidden = !needed;
    secret.el.hidden = !needed;
  };
  type.input.addEventListener("change", sync);
  sync();
  const payload = payloadFields();

  const form = h("form", { class: "card", "aria-labelledby": "new-profile-h" },
    h("h2", { id: "new-profile-h" }, "New device profile"),
    h("div", { class: "row" }, name.el, type.el, key.el, secret.el, create), message.el);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { name: name.input.value.trim(), provisionType: type.input.value };
    payload.addTo(body);
    if (body.provisionType !== "DISABLED") {
      body.provisionDeviceKey = key.input.value;
      body.provisionDeviceSecret = secret.input.value;
    }
    message.clear();
    busy(create, async () => {
      try {
        const profile = await api("POST", "/api/deviceProfile", { body });
        form.reset();
        sync();
        message.ok(`Device profile "${profile.name}" created.`);
        load();
      } catch (error) {
        message.error("Creating the device profile", error);
      }
    });
  });

  create.before(payload.payload.el);
  form.querySelector(".row").after(payload.box);
  form.addEventListener("reset", () => setTimeout(payload.sync));

  const order = newestWins();
  async function load() {
    const ticket = order.start();
    try {
      const page = await api("GET", "/api/deviceProfiles", { query: { pageSize: state.pageSize, page: state.page } });
      if (!life.alive || !order.fresh(ticket)) return;
      clear(list.tbody);
      for (const p of page.data) {
        const label = (TYPES.find(([value]) => value === p.provisionType) || [null, p.provisionType])[1];
        list.tbody.append(h("tr", { dataset: { profileId: p.id.id } },
          h("th", { scope: "row" }, p.name, p.default ? h("span", { class: "badge on" }, "default") : null, " ",
            payloadCell(p)),
          h("td", null, label),
          h("td", null, p.provisionDeviceKey ? h("code", null, p.provisionDeviceKey) : "—"),
          h("td", null, p.provisionDeviceSecret ? h("code", null, p.provisionDeviceSecret) : "—"),
          h("td", null, formatTime(p.createdTime)), h("td", null, actions(p))));
      }
      if (!page.data.length) emptyRow(list.tbody, 6, "No profiles.");
      summary.textContent = `${page.totalElements} profile${page.totalElements === 1 ? "" : "s"}`;
      pages.update(state.page, page.totalPages);
    } catch (error) {
      if (life.alive) showError("Loading device profiles", error);  // not on the page the user went on to
    }
  }

  function actions(profile) {
    if (profile.default) return h("span", { class: "hint" }, "the default");
    const choose = h("button", { type: "button", "aria-label": `Make ${profile.name} the default` }, "Make default");
    const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${profile.name}` }, "Delete");
    choose.addEventListener("click", () => act(choose, "POST", `/api/deviceProfile/${seg(profile.id.id)}/default`,
      "Choosing the default profile", `"${profile.name}" is the default profile now.`));
    remove.addEventListener("click", () => {
      if (!confirm(`Delete the device profile "${profile.name}"?`)) return;
      act(remove, "DELETE", `/api/deviceProfile/${seg(profile.id.id)}`, "Deleting the device profile",
        `Device profile "${profile.name}" deleted.`);
    });
    return h("div", { class: "row" }, choose, remove);
  }

  function act(button, method, path, what, done) {
    rowMessage.clear();
    busy(button, async () => {
      try {
        await api(method, path);
        rowMessage.ok(done);
        await load();
      } catch (error) {
        rowMessage.error(what, error); // e.g. 400: used by devices
      }
    });
  }

  view.append(h("h1", { tabindex: "-1" }, "Device profiles"),
    h("p", { class: "hint" }, "A device's type names its profile. A profile that allows provisioning lets " +
      "devices with its key and secret get a token over CoAP. A Protobuf profile's devices send the messages " +
      "of its schemas (proto3; a schema left empty is ThingsBoard's default)."),
    form, summary, rowMessage.el, list.el, pages.el);
  load();
}
