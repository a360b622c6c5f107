// Server-side RPC (admin): send a one-way or two-way call and show the answer; the device's
// RPC history, newest first.

import { api, seg } from "./api.js";
import { badge, busy, dataTable, field, formatTime, formatValue, h, newestWins, notice, pager, showError, syncRows } from "./dom.js";

const PAGE_SIZE = 10;

export function rpcSection(id, life) {
  const method = field("rpc-method", "Method", { required: true, autocomplete: "off", placeholder: "setGpio" });
  const params = field("rpc-params", "Params (JSON; empty sends {})", { autocomplete: "off", spellcheck: "false",
    placeholder: '{"pin": 1}', "aria-describedby": "rpc-result" });
  const timeout = field("rpc-timeout", "Timeout (ms)", { type: "number", min: 1, step: 1, value: "10000" });
  const kind = h("fieldset", { class: "choices" }, h("legend", null, "Kind"),
    h("label", null, h("input", { type: "radio", name: "rpc-kind", id: "rpc-kind-twoway", value: "twoway", checked: true }),
      " Two-way (waits for the reply)"),
    h("label", null, h("input", { type: "radio", name: "rpc-kind", id: "rpc-kind-oneway", value: "oneway" }), " One-way"));
  const send = h("button", { type: "submit", id: "rpc-send" }, "Send");
  const result = notice("rpc-result"); // beside Send: waiting, the reply, or the error
  const form = h("form", { "aria-labelledby": "rpc-h" },
    h("div", { class: "row" }, method.el, params.el, timeout.el), kind, send, result.el);

  const history = dataTable("rpc-history", "RPC history",
    ["Created", "Id", "Method", "Kind", "Status", "Params", "Response"]);
  let page = 0;
  const pages = pager("Pages of RPC history", (p) => { page = p; loadHistory(); });
  const order = newestWins();

  async function loadHistory() {
    try {
      const ticket = order.start();
      const answer = await api("GET", `/api/rpc/persistent/device/${seg(id)}`, { query: { pageSize: PAGE_SIZE, page } });
      if (!life.alive || !order.fresh(ticket)) return;
      pages.update(page, answer.totalPages);
      syncRows(history.tbody, answer.data, (rpc) => rpc.id.id, historyRow, 7, "No RPCs yet.");
    } catch (error) {
      if (life.alive) showError("Reading the RPC history", error);
    }
  }

  function historyRow(rpc) {
    const request = rpc.request || {};
    return h("tr", { dataset: { rpcId: rpc.id.id } },
      h("td", null, formatTime(rpc.createdTime)),
      h("td", null, String(request.id)),
      h("th", { scope: "row" }, request.method),
      h("td", null, request.oneway ? "one-way" : "two-way"),
      h("td", { class: "rpc-status" }, badge(rpc.status === "SUCCESSFUL", rpc.status, rpc.status)),
      h("td", { class: "value rpc-params" }, formatValue(request.params ?? null)),
      h("td", { class: "value rpc-response" }, "response" in rpc ? formatValue(rpc.response) : "—"));
  }

  params.input.addEventListener("input", () => params.input.removeAttribute("aria-invalid"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    // params {} unless given, as the CLI sends them: firmware reading params.x finds an object
    const body = { method: method.input.value.trim(), params: {} };
    if (params.input.value.trim()) {
      try {
        body.params = JSON.parse(params.input.value);
      } catch (error) {
        result.error("The params are not JSON", error.message);
        params.input.setAttribute("aria-invalid", "true");
        params.input.focus();
        return;
      }
    }
    if (timeout.input.value) body.timeout = Number(timeout.input.value);
    const way = form.querySelector("input[name=rpc-kind]:checked").value;
    busy(send, async () => {
      result.ok(way === "twoway"
        ? `Waiting for the reply to "${body.method}"…` : `Waiting for the device to take "${body.method}"…`);
      const pending = setTimeout(loadHistory, 500); // shows it QUEUED / SENT meanwhile
      try {
        const answer = await api("POST", `/api/rpc/${way}/${seg(id)}`, { body });
        if (way === "twoway") {
          result.ok(h("span", null, `Reply to "${body.method}":`), h("pre", { id: "rpc-reply" }, JSON.stringify(answer, null, 2)));
        } else {
          result.ok(`"${body.method}" was delivered to the device.`);
        }
      } catch (error) {
        result.error(`Sending "${body.method}"`, error);
      } finally {
        clearTimeout(pending);
      }
    }).then(() => life.alive && loadHistory()); // Send is ready again before the history is read
  });

  life.every(10000, loadHistory);
  loadHistory();
  return h("section", { class: "card", "aria-labelledby": "rpc-h" },
    h("h2", { id: "rpc-h" }, "Server-side RPC"),
    h("p", { class: "hint" }, "The device receives it while it observes /api/v1/TOKEN/rpc."),
    form,
    h("h3", { id: "rpc-history-h" }, "RPC history"),
    h("div", { class: "row" }, h("button", { type: "button", onclick: () => loadHistory() }, "Refresh history")),
    history.el, pages.el);
}
