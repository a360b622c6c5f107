// A device's power-saving mode on its page: what it is (its own, or its profile's) and, for the
// admin, a form that sets the device's own mode and timers (ThingsBoard's
// deviceData.transportConfiguration) or hands it back to its profile.

import { api, seg } from "./api.js";
import { busy, field, h, notice } from "./dom.js";

const MODES = ["PSM", "DRX", "E_DRX"];
const TIMERS = [
  ["psmActivityTimer", "PSM activity timer (ms)"],
  ["edrxCycle", "eDRX cycle (ms)"],
  ["pagingTransmissionWindow", "Paging transmission window (ms)"],
];

/** The text of a mode and its timers: "PSM (activity timer 10000 ms)". */
export function describePower(settings) {
  if (!settings || !settings.powerMode) return "none (downlinks at any time)";
  const timer = settings.powerMode === "PSM" ? ["activity timer", settings.psmActivityTimer]
    : settings.powerMode === "E_DRX" ? ["paging window", settings.pagingTransmissionWindow] : null;
  return timer ? `${settings.powerMode} (${timer[0]} ${timer[1] || 10000} ms)` : settings.powerMode;
}

/** The <dd> of the device's power mode, filled in as it is learnt. */
export function powerFact(device, ctx) {
  const dd = h("dd", { id: "device-power" });
  const own = device.deviceData && device.deviceData.transportConfiguration;
  if (own && own.powerMode) {
    dd.textContent = `${describePower(own)}, its own`;
  } else if (ctx.admin) {
    dd.textContent = "as its profile";
    profileSettings(device.type).then((settings) => {
      dd.textContent = `${describePower(settings)}, from profile ${device.type}`;
    }, () => {});
  } else {
    dd.textContent = "as its profile";
  }
  return dd;
}

async function profileSettings(name) {
  for (let page = 0; page < 100; page++) {
    const found = await api("GET", "/api/deviceProfiles", { query: { pageSize: 1000, page } });
    const profile = found.data.find((p) => p.name === name);
    if (profile) return ((profile.profileData || {}).transportConfiguration || {}).clientSettings || {};
    if (!found.hasNext) return {};
  }
  return {};
}

/** The admin's form: the device's own mode and timers, saved with the device. */
export function powerSection(device) {
  const own = (device.deviceData && device.deviceData.transportConfiguration) || {};
  const message = notice("power-notice");
  const mode = field("power-mode", "Power mode", {}, "select");
  mode.input.append(h("option", { value: "" }, "as its profile"),
    ...MODES.map((m) => h("option", { value: m }, m)));
  mode.input.value = own.powerMode || "";
  const timers = TIMERS.map(([key, label]) => {
    const f = field(`power-${key}`, label, { type: "number", min: "1", step: "1", placeholder: "10000" });
    if (own[key]) f.input.value = String(own[key]);
    return [key, f];
  });
  const save = h("button", { type: "submit", id: "power-save" }, "Save power mode");
  const form = h("form", { id: "power-form", class: "row" }, mode.el, timers.map(([, f]) => f.el), save);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    message.clear();
    busy(save, async () => {
      const settings = {};
      if (mode.input.value) settings.powerMode = mode.input.value;
      for (const [key, f] of timers) if (f.input.value) settings[key] = Number(f.input.value);
      const transport = Object.keys(settings).length ? { type: "COAP", ...settings } : { type: "DEFAULT" };
      try {
        const current = await api("GET", `/api/device/${seg(device.id.id)}`);
        const saved = await api("POST", "/api/device", {
          body: { ...current, deviceData: { configuration: { type: "DEFAULT" }, transportConfiguration: transport } },
        });
        Object.assign(device, saved);
        message.ok(`Power mode saved: ${describePower(transport.powerMode ? transport : null)}.`);
      } catch (error) {
        message.error("Saving the power mode", error);
      }
    });
  });
  return h("section", { "aria-labelledby": "power-title" },
    h("h2", { id: "power-title" }, "Power saving"), form, message.el);
}
