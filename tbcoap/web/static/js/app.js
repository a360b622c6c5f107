// The console's entry point: sign-in, the header, and hash routing (#/devices, #/device/<id>,
// #/customers, #/profiles) so Back works and every page has its own address.

import { api, clearSession, storedKey, storeKey } from "./api.js";
import { byId, clear, h, notice, resetMessages, showError, showStatus } from "./dom.js";
import { devicesView } from "./devices.js";
import { deviceView } from "./device.js";
import { customersView } from "./customers.js";
import { profilesView } from "./profiles.js";
import { otaPackageView, otaView } from "./ota.js";
import { live } from "./live.js";

const ROUTES = [
  { pattern: /^#\/devices$/, view: devicesView, nav: "#/devices" },
  { pattern: /^#\/device\/([^/]+)$/, view: deviceView, nav: "#/devices" },
  { pattern: /^#\/customers$/, view: customersView, nav: "#/customers", admin: true },
  { pattern: /^#\/profiles$/, view: profilesView, nav: "#/profiles", admin: true },
  { pattern: /^#\/ota$/, view: otaView, nav: "#/ota", admin: true },
  { pattern: /^#\/ota\/([^/]+)$/, view: otaPackageView, nav: "#/ota", admin: true },
];

let user = null; // the answer of GET /api/auth/user
let life = null; // the current page's timers and liveness

/** What a page may know of the signed-in key. */
function context() {
  const admin = user.authority === "TENANT_ADMIN";
  return { admin, name: user.name, customerId: admin ? null : user.customerId && user.customerId.id };
}

/** Timers of one page; all stop when the page is left. */
function newLife() {
  const timers = [];
  const endings = [];
  const current = {
    alive: true,
    /** Run `work` every `ms`; with `fallback`, only while the live socket is down (polling instead). */
    every(ms, work, fallback = false) {
      if (!current.alive) return; // the page was left while it loaded
      let running = false;
      timers.push(setInterval(async () => {
        if (running || !current.alive || document.hidden || (fallback && live.up)) return;
        running = true;
        try {
          await work();
        } finally {
          running = false;
        }
      }, ms));
    },
    onEnd(fn) {
      if (current.alive) endings.push(fn);
      else fn();
    },
    end() {
      current.alive = false;
      timers.forEach(clearInterval);
      endings.forEach((fn) => fn());
    },
  };
  return current;
}

function updateHeader(route) {
  const signedIn = Boolean(user);
  byId("nav").hidden = !signedIn;
  byId("who").hidden = !signedIn;
  if (!signedIn) return;
  const { admin, name } = context();
  byId("who-name").textContent = `${name} (${admin ? "administrator" : "customer"})`;
  for (const link of byId("nav").querySelectorAll("a")) {
    link.parentElement.hidden = link.dataset.admin === "true" && !admin;
    if (route && link.getAttribute("href") === route.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function render(moveFocus = true) {
  if (life) life.end();
  life = newLife();
  resetMessages(); // no message outlives its page
  const view = clear(byId("view"));
  if (!user) {
    updateHeader(null);
    signInView(view);
    return;
  }
  const hash = location.hash || "#/devices";
  for (const route of ROUTES) {
    const match = hash.match(route.pattern);
    if (!match) continue;
    let args;
    try {
      args = match.slice(1).map(decodeURIComponent);
    } catch {  // a malformed %-escape typed into the address bar
      break;
    }
    updateHeader(route);
    if (route.admin && !context().admin) {
      view.append(h("h1", { tabindex: "-1" }, "Not available"),
        h("p", null, "This page needs the admin key: a customer's key may not make these calls."));
    } else {
      route.view(view, context(), life, ...args);
    }
    if (moveFocus) view.querySelector("h1")?.focus();
    return;
  }
  location.replace("#/devices");
}

function signInView(view) {
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", spellcheck: "false",
    required: true, "aria-describedby": "api-key-help" });
  const button = h("button", { type: "submit" }, "Sign in");
  const message = notice("sign-in-notice");
  // The input has no name: even a form submitted without this script would not put it in a URL.
  const form = h("form", { id: "sign-in", class: "card sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in"),
    h("div", { class: "field" }, h("label", { for: "api-key" }, "API key"), input),
    h("p", { id: "api-key-help", class: "hint" },
      "The admin key (the file admin.key in the server's data directory) or a customer's key. ",
      "It is kept in this browser tab only and forgotten when you sign out or close the tab."),
    button, message.el);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    message.clear();
    try {
      const who = await api("GET", "/api/auth/user", { key });
      storeKey(key);
      user = who;
      live.start(key);
      input.value = "";
      // stay on the page asked for (a link opened before signing in), else the device list
      if (ROUTES.some((route) => route.pattern.test(location.hash))) render();
      else location.hash = "#/devices";
    } catch (error) {
      message.error(error.status === 401 ? "Sign-in failed, the key was not accepted" : "Sign-in failed", error);
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  view.append(form);
}

function signOut(message) {
  live.stop();
  clearSession();
  user = null;
  history.replaceState(null, "", location.pathname);
  render();
  showStatus(message);
}

async function start() {
  byId("sign-out").addEventListener("click", () => signOut("Signed out. The key was removed from this tab."));
  byId("skip").addEventListener("click", (event) => {
    event.preventDefault(); // "#main" would read as a route
    byId("main").focus();
  });
  window.addEventListener("hashchange", () => render());
  window.addEventListener("tbcoap:unauthorized", (event) => {
    if (!user) return;
    signOut("");
    showError("Signed out, the key is no longer accepted", event.detail);
  });
  live.watch((up) => {
    const state = byId("live-state");
    state.dataset.state = up ? "live" : "polling";
    state.textContent = up ? "Live updates" : "Polling (live updates reconnecting)";
  });
  if (storedKey()) {
    try {
      user = await api("GET", "/api/auth/user");
      live.start(storedKey());
    } catch (error) {
      if (error.status === 401) clearSession();
      render(false);
      showError("Checking the stored key", error);
      return;
    }
  }
  render(false);
}

start();
