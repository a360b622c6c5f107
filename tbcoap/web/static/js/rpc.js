// Server-side RPC (admin): send a one-way or two-way call and show the answer; the device's
// RPC history, newest first.

import { api, seg } from "./api.js";
import { append, badge, busy, clear, dataTable, emptyRow, field, formatTime, formatValue, h, newestWins, pager, showError } from "./dom.js";

const PAGE_SIZE = 10;

export function rpcSection(id, life) {
  const method = field("rpc-method", "Method", { required: true, autocomplete: "off", placeholder: "setGpio" });
  const params = field("rpc-params", "Params (JSON, optional)", { autocomplete: "off", spellcheck: "false",
    placeholder: '{"pin": 1}' });
  const timeout = field("rpc-timeout", "Timeout (ms)", { type: "number", min: 1, step: 1, value: "10000" });
  const kind = h("fieldset", { class: "choices" }, h("legend", null, "Kind"),
    h("label", null, h("input", { type: "radio", name: "rpc-kind", id: "rpc-kind-twoway", value: "twoway", checked: true }),
      " Two-way (waits for the reply)"),
    h("label", null, h("input", { type: "radio", name: "rpc-kind", id: "rpc-kind-oneway", value: "oneway" }), " One-way"));
  const send = h("button", { type: "submit", id: "rpc-send" }, "Send");
  const result = h("div", { id: "rpc-result", class: "rpc-result", role: "status", "aria-live": "polite" });
  const form = h("form", { "aria-labelledby": "rpc-h" },
    h("div", { class: "row" }, method.el, params.el, timeout.el), kind, send);

  const history = dataTable("rpc-history", "RPC history",
    ["Created", "Id", "Method", "Kind", "Status", "Params", "Response"]);
  let page = 0;
  const pages = pager("Pages of RPC history", (p) => { page = p; loadHistory(); });
  let shown = null;
  const order = newestWins();

  async function loadHistory() {
    try {
      const ticket = order.start();
      const answer = await api("GET", `/api/rpc/persistent/device/${seg(id)}`, { query: { pageSize: PAGE_SIZE, page } });
      if (!life.alive || !order.fresh(ticket)) return;
      pages.update(page, answer.totalPages);
      const text = JSON.stringify(answer.data);
      if (text === shown) return;
      shown = text;
      clear(history.tbody);
      for (const rpc of answer.data) {
        const request = rpc.request || {};
        history.tbody.append(h("tr", { dataset: { rpcId: rpc.id.id } },
          h("td", null, formatTime(rpc.createdTime)),
          h("td", null, String(request.id)),
          h("th", { scope: "row" }, request.method),
          h("td", null, request.oneway ? "one-way" : "two-way"),
          h("td", { class: "rpc-status" }, badge(rpc.status === "SUCCESSFUL", rpc.status, rpc.status)),
          h("td", { class: "value" }, formatValue(request.params ?? null)),
          h("td", { class: "value rpc-response" }, "response" in rpc ? formatValue(rpc.response) : "—")));
      }
      if (!answer.data.length) emptyRow(history.tbody, 7, "No RPCs yet.");
    } catch (error) {
      if (life.alive) showError("Reading the RPC history", error);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { method: method.input.value.trim() };
    if (params.input.value.trim()) {
      try {
        body.params = JSON.parse(params.input.value);
      } catch (error) {
        showError("The params are not JSON", error.message);
        return;
      }
    }
    if (timeout.input.value) body.timeout = Number(timeout.input.value);
    const way = form.querySelector("input[name=rpc-kind]:checked").value;
    busy(send, async () => {
      clear(result).append(h("p", null, way === "twoway"
        ? `Waiting for the reply to "${body.method}"…` : `Waiting for the device to take "${body.method}"…`));
      const pending = setTimeout(loadHistory, 500); // shows it QUEUED / SENT meanwhile
      try {
        const answer = await api("POST", `/api/rpc/${way}/${seg(id)}`, { body });
        append(clear(result), way === "twoway"
          ? [h("p", null, `Reply to "${body.method}":`), h("pre", { id: "rpc-reply" }, JSON.stringify(answer, null, 2))]
          : h("p", null, `"${body.method}" was delivered to the device.`));
      } catch (error) {
        clear(result).append(h("p", { class: "error-text" }, `"${body.method}" failed: ${error}`));
        showError("Sending the RPC", error);
      } finally {
        clearTimeout(pending);
        if (life.alive) await loadHistory();
      }
    });
  });

  life.every(10000, loadHistory);
  loadHistory();
  return h("section", { class: "card", "aria-labelledby": "rpc-h" },
    h("h2", { id: "rpc-h" }, "Server-side RPC"),
    h("p", { class: "hint" }, "The device receives it while it observes /api/v1/TOKEN/rpc."),
    form, result,
    h("h3", { id: "rpc-history-h" }, "RPC history"),
    h("div", { class: "row" }, h("button", { type: "button", onclick: () => loadHistory() }, "Refresh history")),
    history.el, pages.el);
}
