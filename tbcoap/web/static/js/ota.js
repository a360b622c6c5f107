// Firmware and software packages (admin): uploading one for a device profile, assigning it to the
// profile, and a package's page with its devices and the state each reported (fw_state / sw_state).

import { ApiError, api, seg, storedKey } from "./api.js";
import { busy, clear, dataTable, emptyRow, field, formatTime, h, newestWins, notice, pager, showError } from "./dom.js";

const state = { page: 0, pageSize: 20 };
const FIELDS = { FIRMWARE: "firmwareId", SOFTWARE: "softwareId" };

async function profiles() {
  return (await api("GET", "/api/deviceProfiles", { query: { pageSize: 1000, page: 0 } })).data;
}

/** POST the file as multipart (the browser reads it from disk as it sends). */
async function uploadData(packageId, file, algorithm) {
  const form = new FormData();
  form.append("file", file, file.name);
  const headers = { Accept: "application/json", "X-Authorization": `Bearer ${storedKey()}` };
  let response;
  try {
    response = await fetch(`/api/otaPackage/${seg(packageId)}?checksumAlgorithm=${seg(algorithm)}`,
      { method: "POST", headers, body: form, cache: "no-store", credentials: "omit" });
  } catch (error) {
    throw new ApiError(0, `the server could not be reached (${error.message})`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, (data && data.message) || `HTTP ${response.status}`);
  return data;
}

export function otaView(view, ctx, life) {
  const file = field("ota-file", "File", { type: "file", required: true });
  const title = field("ota-title", "Title", { required: true, maxlength: 255, autocomplete: "off" });
  const version = field("ota-version", "Version", { required: true, maxlength: 255, autocomplete: "off" });
  const type = field("ota-type", "Type", {}, "select");
  type.input.append(h("option", { value: "FIRMWARE" }, "Firmware"), h("option", { value: "SOFTWARE" }, "Software"));
  const profile = field("ota-profile", "Device profile", { required: true }, "select");
  const algorithm = field("ota-algorithm", "Checksum", {}, "select");
  algorithm.input.append(...["SHA256", "SHA384", "SHA512", "MD5", "CRC32", "MURMUR3_32", "MURMUR3_128"]
    .map((a) => h("option", { value: a }, a)));
  const upload = h("button", { type: "submit", id: "upload-package" }, "Upload");
  const message = notice("new-package-notice");
  const list = dataTable("packages-table", "Packages",
    ["Title", "Version", "Type", "Profile", "Size", "Checksum", "Created", "Actions"]);
  const rowMessage = notice("packages-notice");
  const summary = h("p", { class: "summary", id: "packages-summary" });
  const pages = pager("Pages of packages", (page) => { state.page = page; load(); });
  let names = {}; // profile id -> its JSON

  const form = h("form", { class: "card", "aria-labelledby": "new-package-h" },
    h("h2", { id: "new-package-h" }, "Upload a package"),
    h("div", { class: "row" }, file.el, title.el, version.el, type.el, profile.el, algorithm.el, upload), message.el);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    message.clear();
    busy(upload, async () => {
      let created = null;
      try {
        created = await api("POST", "/api/otaPackage", { body: { title: title.input.value.trim(),
          version: version.input.value.trim(), type: type.input.value, deviceProfileId: { id: profile.input.value } } });
        const done = await uploadData(created.id.id, file.input.files[0], algorithm.input.value);
        form.reset();
        message.ok(`Package "${done.title}" ${done.version} uploaded (${done.dataSize} bytes, ${done.checksumAlgorithm} ${done.checksum}).`);
        load();
      } catch (error) {
        if (created) await api("DELETE", `/api/otaPackage/${seg(created.id.id)}`).catch(() => null);
        message.error("Uploading the package", error);
      }
    });
  });

  const order = newestWins();
  async function load() {
    const ticket = order.start();
    try {
      const [page, found] = await Promise.all([
        api("GET", "/api/otaPackages", { query: { pageSize: state.pageSize, page: state.page } }), profiles()]);
      if (!life.alive || !order.fresh(ticket)) return;
      names = Object.fromEntries(found.map((p) => [p.id.id, p]));
      if (!profile.input.options.length) {
        profile.input.append(...found.map((p) => h("option", { value: p.id.id }, p.name)));
      }
      clear(list.tbody);
      for (const p of page.data) {
        const owner = names[p.deviceProfileId.id];
        list.tbody.append(h("tr", { dataset: { packageId: p.id.id } },
          h("th", { scope: "row" }, h("a", { href: `#/ota/${seg(p.id.id)}` }, p.title)),
          h("td", null, p.version), h("td", null, p.type), h("td", null, owner ? owner.name : "—"),
          h("td", null, p.hasData ? String(p.dataSize) : "no data"),
          h("td", null, p.checksum ? h("code", { title: p.checksum }, `${p.checksumAlgorithm} ${p.checksum.slice(0, 12)}…`) : "—"),
          h("td", null, formatTime(p.createdTime)), h("td", null, actions(p, owner))));
      }
      if (!page.data.length) emptyRow(list.tbody, 8, "No packages.");
      summary.textContent = `${page.totalElements} package${page.totalElements === 1 ? "" : "s"}`;
      pages.update(state.page, page.totalPages);
    } catch (error) {
      if (life.alive) showError("Loading packages", error);
    }
  }

  function actions(pkg, owner) {
    const assign = h("button", { type: "button", "aria-label": `Assign ${pkg.title} ${pkg.version} to its profile` },
      "Assign to profile");
    const unassign = h("button", { type: "button", "aria-label": `Unassign ${pkg.title} ${pkg.version}` }, "Unassign");
    const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${pkg.title} ${pkg.version}` }, "Delete");
    const save = (button, ref, done) => busy(button, async () => {
      rowMessage.clear();
      try {
        const current = await api("GET", `/api/deviceProfile/${seg(pkg.deviceProfileId.id)}`);
        current[FIELDS[pkg.type]] = ref;
        await api("POST", "/api/deviceProfile", { body: current });
        rowMessage.ok(done);
      } catch (error) {
        rowMessage.error("Assigning the package", error);
      }
    });
    assign.addEventListener("click", () => save(assign, { id: pkg.id.id },
      `"${pkg.title}" ${pkg.version} is assigned to ${owner ? owner.name : "its profile"}: its devices are told now.`));
    unassign.addEventListener("click", () => save(unassign, null, `${owner ? owner.name : "The profile"} has no ${pkg.type.toLowerCase()} now.`));
    remove.addEventListener("click", () => {
      if (!confirm(`Delete the package "${pkg.title}" ${pkg.version}?`)) return;
      busy(remove, async () => {
        rowMessage.clear();
        try {
          await api("DELETE", `/api/otaPackage/${seg(pkg.id.id)}`);
          rowMessage.ok(`Package "${pkg.title}" ${pkg.version} deleted.`);
          await load();
        } catch (error) {
          rowMessage.error("Deleting the package", error);
        }
      });
    });
    return h("div", { class: "row" }, assign, unassign, remove);
  }

  view.append(h("h1", { tabindex: "-1" }, "Firmware and software"),
    h("p", { class: "hint" }, "A package belongs to a device profile. Assigned to the profile, it reaches the profile's " +
      "devices as fw_* (or sw_*) shared attributes; they download it from /fw/TOKEN (/sw/TOKEN) over CoAP and " +
      "report fw_state as telemetry."),
    form, summary, rowMessage.el, list.el, pages.el);
  load();
}

export function otaPackageView(view, ctx, life, packageId) {
  const heading = h("h1", { tabindex: "-1" }, "Package");
  const facts = h("dl", { class: "facts", id: "package-facts" });
  const list = dataTable("package-devices", "Devices of the package", ["Device", "State", "Error", "Reported"]);
  const summary = h("p", { class: "summary", id: "package-devices-summary" });
  const paging = { page: 0 };
  const pages = pager("Pages of devices", (page) => { paging.page = page; load(); });
  const order = newestWins();

  async function load() {
    const ticket = order.start();
    try {
      const [pkg, page] = await Promise.all([api("GET", `/api/otaPackage/info/${seg(packageId)}`),
        api("GET", `/api/otaPackage/${seg(packageId)}/devices`, { query: { pageSize: 50, page: paging.page } })]);
      if (!life.alive || !order.fresh(ticket)) return;
      heading.textContent = `${pkg.title} ${pkg.version}`;
      clear(facts).append(...[["Type", pkg.type], ["File", pkg.fileName || "—"], ["Size", pkg.hasData ? String(pkg.dataSize) : "no data"],
        ["Checksum", pkg.checksum ? `${pkg.checksumAlgorithm} ${pkg.checksum}` : "—"], ["Created", formatTime(pkg.createdTime)]]
        .flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
      clear(list.tbody);
      for (const d of page.data) {
        const reported = Object.entries(d.otaReported || {}).map(([k, v]) => `${k}=${v}`).join(", ");
        list.tbody.append(h("tr", { dataset: { deviceId: d.id.id } },
          h("th", { scope: "row" }, h("a", { href: `#/device/${seg(d.id.id)}` }, d.name)),
          h("td", null, d.otaState ? h("span", { class: d.otaState === "FAILED" ? "badge" : "badge on" }, d.otaState) : "—"),
          h("td", null, d.otaError || ""), h("td", null, reported)));
      }
      if (!page.data.length) emptyRow(list.tbody, 4, "No device gets this package.");
      summary.textContent = `${page.totalElements} device${page.totalElements === 1 ? "" : "s"}`;
      pages.update(paging.page, page.totalPages);
    } catch (error) {
      if (life.alive) showError("Loading the package", error);
    }
  }

  view.append(h("p", null, h("a", { href: "#/ota" }, "← Packages")), heading, facts, summary, list.el, pages.el);
  load();
  life.every(5000, load);
}
