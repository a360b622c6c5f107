// Customers (admin): a page of them, creating one (its API key is shown once) and deleting one
// (its devices become free, its key is refused at once).

import { api, seg } from "./api.js";
import { busy, clear, dataTable, emptyRow, field, formatTime, h, newestWins, notice, pager, showError } from "./dom.js";

const state = { page: 0, pageSize: 20 };

export function customersView(view, ctx, life) {
  const title = field("customer-title", "Title", { required: true, maxlength: 255, autocomplete: "off" });
  const create = h("button", { type: "submit", id: "create-customer" }, "Create customer");
  const message = notice("new-customer-notice");
  const created = h("div", { id: "new-customer", class: "secret-box", hidden: true, "aria-live": "polite" });
  const list = dataTable("customers-table", "Customers", ["Title", "Id", "Created", "Actions"]);
  const rowMessage = notice("customers-notice"); // what a row's Delete did
  const summary = h("p", { class: "summary", id: "customers-summary" });
  const pages = pager("Pages of customers", (page) => { state.page = page; load(); });

  const form = h("form", { class: "card", "aria-labelledby": "new-customer-h" },
    h("h2", { id: "new-customer-h" }, "New customer"),
    h("div", { class: "row" }, title.el, create), message.el);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    message.clear();
    busy(create, async () => {
      try {
        const customer = await api("POST", "/api/customer", { body: { title: title.input.value.trim() } });
        form.reset();
        showKey(customer);
        message.ok(`Customer "${customer.title}" created.`);
        load();
      } catch (error) {
        message.error("Creating the customer", error);
      }
    });
  });

  function showKey(customer) {
    const code = h("code", { id: "new-customer-key", class: "token" }, customer.apiKey);
    const copied = notice("copy-key-notice");
    clear(created).append(
      h("p", null, `API key of "${customer.title}": shown only this once, copy it now.`),
      h("p", null, code),
      h("div", { class: "row" },
        h("button", { type: "button", onclick: () => copy(customer.apiKey, copied) }, "Copy key"),
        h("button", { type: "button", onclick: () => { clear(created); created.hidden = true; } }, "Done, hide it")),
      copied.el);
    created.hidden = false;
  }

  const order = newestWins();
  async function load() {
    const ticket = order.start();
    try {
      const page = await api("GET", "/api/customers", { query: { pageSize: state.pageSize, page: state.page } });
      if (!life.alive || !order.fresh(ticket)) return;
      if (state.page > 0 && state.page >= page.totalPages) {
        state.page = Math.max(0, page.totalPages - 1);
        return load();
      }
      clear(list.tbody);
      for (const c of page.data) {
        const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${c.title}` }, "Delete");
        remove.addEventListener("click", () => removeCustomer(c, remove));
        list.tbody.append(h("tr", { dataset: { customerId: c.id.id } }, h("th", { scope: "row" }, c.title),
          h("td", null, h("code", null, c.id.id)), h("td", null, formatTime(c.createdTime)), h("td", null, remove)));
      }
      if (!page.data.length) emptyRow(list.tbody, 4, "No customers yet.");
      summary.textContent = `${page.totalElements} customer${page.totalElements === 1 ? "" : "s"}`;
      pages.update(state.page, page.totalPages);
    } catch (error) {
      if (life.alive) showError("Loading customers", error);  // not on the page the user went on to
    }
  }

  function removeCustomer(customer, button) {
    if (!confirm(`Delete the customer "${customer.title}"? Its devices become free and its key stops working at once.`)) {
      return;
    }
    rowMessage.clear();
    busy(button, async () => {
      try {
        await api("DELETE", `/api/customer/${seg(customer.id.id)}`);
        rowMessage.ok(`Customer "${customer.title}" deleted; its devices are free.`);
        await load();
      } catch (error) {
        rowMessage.error("Deleting the customer", error);
      }
    });
  }

  view.append(h("h1", { tabindex: "-1" }, "Customers"),
    h("p", { class: "hint" }, "A customer signs in with its own key and sees only the devices it claimed or was given."),
    form, created, summary, rowMessage.el, list.el, pages.el);
  load();
}

async function copy(text, message) {
  try {
    await navigator.clipboard.writeText(text);
    message.ok("The key was copied to the clipboard.");
  } catch (error) {
    message.error("Copying the key", error);
  }
}
