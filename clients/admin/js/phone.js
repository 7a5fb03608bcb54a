// The phone-order form: an admin enters an order taken by phone. Lines come from the
// catalog (category → item → options, quantity) or are custom lines with a price (only an
// admin may send those); the total is shown as the server will price it. Submitted with an
// Idempotency-Key kept until the order is placed or the form changes, so a double click or
// a retry after a lost answer never makes two orders. A refusal is shown beside the field
// it names (forms.js).

import { el, inputToCents, money, orderLabel } from "./format.js";
import { clearErrors, newKey, showProblem } from "./forms.js";

const $ = (id) => document.getElementById(id);
const MAX_LINES = 100; // the API's limit on an order's items
const MAX_QUANTITY = 1000;
// The form's words for the API's field errors (items.* is any line).
const MESSAGES = {
  "customer.name": "Enter the customer's name.",
  "customer.phone": "Enter a phone number: digits, spaces and + ( ) - . only, at least 3.",
  "customer.address": "Enter the delivery address.",
  items: "Add at least one line: from the catalog or a custom line.",
};

function quantity(input) {
  const n = Number(input.value);
  return Number.isInteger(n) && n >= 1 && n <= MAX_QUANTITY ? n : null;
}

function addOption(select, value, text, disabled = false) {
  const option = el("option", "", text);
  option.value = value;
  option.disabled = disabled;
  select.append(option);
}

export class PhoneOrder {
  constructor({ store, api, onPlaced }) {
    this.store = store; // CatalogStore
    this.api = api;
    this.onPlaced = onPlaced; // (order) -> the board takes it like a message
    this.lines = []; // {item_id, option_ids, quantity} or {name, quantity, unit_price_cents}
    this.key = null;
    this.busy = false;
    // Handlers as properties: a new session's form replaces the last one's.
    $("po-category").onchange = () => this.renderItems();
    $("po-item").onchange = () => this.renderOptions();
    $("po-add").onclick = () => this.addCatalogLine();
    $("po-custom-add").onclick = () => this.addCustomLine();
    $("po-lines").onclick = (e) => {
      const button = e.target.closest("button[data-remove]");
      if (!button) return;
      this.lines.splice(Number(button.dataset.remove), 1);
      this.changed();
    };
    $("phone-form").oninput = () => { this.key = null; }; // another order now: a new key
    $("phone-form").onsubmit = (e) => { e.preventDefault(); this.submit(); };
    $("po-clear").onclick = () => this.reset();
    store.onChange(() => { this.renderPicker(); this.renderLines(); });
    this.reset();
  }

  reset() {
    for (const id of ["po-name", "po-phone", "po-address", "po-notes", "po-custom-name", "po-custom-price"]) $(id).value = "";
    $("po-quantity").value = "1";
    $("po-custom-quantity").value = "1";
    this.lines = [];
    this.key = null;
    clearErrors($("phone-form"));
    for (const id of ["po-error", "po-add-error", "po-custom-error"]) $(id).hidden = true;
    this.renderPicker();
    this.changed();
  }

  changed() {
    this.key = null;
    this.renderLines();
  }

  // -- the catalog picker ---------------------------------------------------------
  renderPicker() {
    const select = $("po-category");
    const chosen = select.value;
    select.replaceChildren();
    const categories = this.store.categories;
    if (!categories.length) addOption(select, "", this.store.catalog ? "No categories yet" : "Catalog not loaded", true);
    for (const c of categories) addOption(select, c.id, c.name);
    if (categories.some((c) => c.id === chosen)) select.value = chosen;
    this.renderItems();
  }

  renderItems() {
    const select = $("po-item");
    const chosen = select.value;
    const category = this.store.categories.find((c) => c.id === $("po-category").value);
    select.replaceChildren();
    for (const item of category?.items ?? []) {
      const price = money(item.price_cents, this.store.currency);
      addOption(select, item.id, `${item.name} — ${item.available ? price : "sold out"}`, !item.available);
    }
    const available = (category?.items ?? []).filter((i) => i.available);
    if (available.some((i) => i.id === chosen)) select.value = chosen;
    else if (available.length) select.value = available[0].id;
    if (!category?.items.length) addOption(select, "", "No items", true);
    this.renderOptions();
  }

  renderOptions() {
    const box = $("po-options");
    const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    const item = this.store.item($("po-item").value);
    box.replaceChildren(...(item?.options ?? []).map((option) => {
      const label = el("label", "check");
      const input = el("input");
      input.type = "checkbox";
      input.value = option.id;
      input.checked = checked.has(option.id);
      const delta = option.price_delta_cents;
      const price = delta ? ` (${delta > 0 ? "+" : "−"}${money(Math.abs(delta), this.store.currency)})` : "";
      label.append(input, ` ${option.name}${price}`);
      return label;
    }));
    $("po-options-field").hidden = !item?.options?.length;
    $("po-add").disabled = !item?.available;
  }

  addCatalogLine() {
    const error = $("po-add-error");
    error.hidden = true;
    const item = this.store.item($("po-item").value);
    const qty = quantity($("po-quantity"));
    let problem = null;
    if (!item) problem = "Pick an item.";
    else if (!item.available) problem = `${item.name} is sold out.`;
    else if (qty === null) problem = `Quantity: a whole number from 1 to ${MAX_QUANTITY}.`;
    else if (this.lines.length >= MAX_LINES) problem = `An order holds at most ${MAX_LINES} lines.`;
    if (problem) {
      error.textContent = problem;
      error.hidden = false;
      return;
    }
    const optionIds = [...$("po-options").querySelectorAll("input:checked")].map((i) => i.value).sort();
    const same = this.lines.find((l) => l.item_id === item.id && l.option_ids.join() === optionIds.join());
    if (same) same.quantity = Math.min(MAX_QUANTITY, same.quantity + qty);
    else this.lines.push({ item_id: item.id, option_ids: optionIds, quantity: qty });
    $("po-quantity").value = "1";
    for (const input of $("po-options").querySelectorAll("input")) input.checked = false;
    this.changed();
  }

  addCustomLine() {
    const error = $("po-custom-error");
    error.hidden = true;
    const name = $("po-custom-name").value.trim();
    const qty = quantity($("po-custom-quantity"));
    const price = inputToCents($("po-custom-price").value);
    let problem = null;
    if (!name) problem = "Name the line.";
    else if (qty === null) problem = `Quantity: a whole number from 1 to ${MAX_QUANTITY}.`;
    else if (price === null) problem = "Unit price: an amount like 4.50 (0 or more).";
    else if (this.lines.length >= MAX_LINES) problem = `An order holds at most ${MAX_LINES} lines.`;
    if (problem) {
      error.textContent = problem;
      error.hidden = false;
      return;
    }
    this.lines.push({ name, quantity: qty, unit_price_cents: price });
    $("po-custom-name").value = "";
    $("po-custom-quantity").value = "1";
    $("po-custom-price").value = "";
    this.changed();
  }

  // -- the lines and the total ----------------------------------------------------
  /** A line as the page shows it: name, options' names, unit price now; null price if gone. */
  describe(line) {
    if (!line.item_id) return { name: line.name, options: [], unit: line.unit_price_cents, custom: true };
    const item = this.store.item(line.item_id);
    if (!item) return { name: "an item no longer in the catalog", options: [], unit: null, gone: true };
    const options = (item.options || []).filter((o) => line.option_ids.includes(o.id));
    const unit = item.price_cents + options.reduce((sum, o) => sum + o.price_delta_cents, 0);
    return { name: item.name, options: options.map((o) => o.name), unit, soldOut: !item.available };
  }

  renderLines() {
    const currency = this.store.currency;
    let total = 0;
    $("po-lines").replaceChildren(...this.lines.map((line, i) => {
      const shown = this.describe(line);
      const row = el("tr");
      row.dataset.line = String(i);
      const name = el("td", "", shown.name);
      if (shown.custom) name.append(el("span", "tag", "custom"));
      if (shown.options.length) name.append(el("span", "item-options", shown.options.join(", ")));
      if (shown.soldOut || shown.gone) name.append(el("span", "field-error", shown.gone ? "Removed from the catalog" : "Sold out now"));
      const error = el("p", "field-error");
      error.dataset.errorFor = `items.${i}`;
      error.hidden = true;
      name.append(error);
      const remove = el("button", "ghost", "Remove");
      remove.type = "button";
      remove.dataset.remove = String(i);
      remove.setAttribute("aria-label", `Remove ${shown.name}`);
      const cell = el("td");
      cell.append(remove);
      total += (shown.unit ?? 0) * line.quantity;
      row.append(name, el("td", "num", String(line.quantity)),
        el("td", "num", shown.unit === null ? "—" : money(shown.unit * line.quantity, currency)), cell);
      return row;
    }));
    $("po-total").textContent = money(total, currency);
    $("po-empty").hidden = this.lines.length > 0;
  }

  body() {
    const body = {
      customer: { name: $("po-name").value.trim(), phone: $("po-phone").value.trim(), address: $("po-address").value.trim() },
      items: this.lines.map((l) => (l.item_id
        ? { item_id: l.item_id, quantity: l.quantity, option_ids: l.option_ids }
        : { name: l.name, quantity: l.quantity, unit_price_cents: l.unit_price_cents })),
    };
    if (this.store.catalog) body.currency = this.store.currency; // the shop's: totals shown in it
    const notes = $("po-notes").value.trim();
    if (notes) body.notes = notes;
    return body;
  }

  async submit() {
    if (this.busy) return; // a double click: the first request is still out
    this.busy = true;
    $("po-submit").disabled = true;
    $("po-error").hidden = true;
    $("po-done").hidden = true;
    clearErrors($("phone-form"));
    this.key ??= newKey(); // kept on failure: a retry of the same form is the same order
    try {
      const order = await this.api.placeOrder(this.body(), this.key);
      const done = $("po-done");
      done.replaceChildren(`Order ${orderLabel(order)} placed for ${order.customer.name}: ${money(order.total_cents, order.currency)}. `);
      const open = el("a", "", "Open it on the board");
      open.href = "#orders";
      open.dataset.order = order.id;
      done.append(open);
      this.reset();
      done.hidden = false;
      this.onPlaced(order);
    } catch (err) {
      showProblem($("phone-form"), $("po-error"), err, MESSAGES);
    } finally {
      this.busy = false;
      $("po-submit").disabled = false;
    }
  }
}
