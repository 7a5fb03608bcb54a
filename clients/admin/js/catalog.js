// The catalog: what the shop sells, kept at its newest version (GET /catalog, then the
// retained `catalog` topic the service republishes on every change), and the editor page:
// categories and items created, edited and deleted over REST, prices typed as money and
// sent as cents, options with price deltas, and the "sold out" switch.

import { centsToInput, el, inputToCents, money, when } from "./format.js";
import { clearErrors, fieldError, showProblem } from "./forms.js";

const $ = (id) => document.getElementById(id);
const byPosition = (a, b) => a.position - b.position || a.name.localeCompare(b.name);
const MAX_OPTIONS = 10; // the API takes at most 10 options per item
const MESSAGES = { name: "Enter a name.", "options.*.name": "Name the option." };

export class CatalogStore {
  constructor() {
    this.catalog = null;
    this.listeners = [];
  }

  /** Keep `catalog` if its version is newer than the one held; returns true when kept. */
  apply(catalog) {
    if (!catalog || !Number.isInteger(catalog.version) || !Array.isArray(catalog.categories)) return false;
    if (this.catalog && catalog.version <= this.catalog.version) return false;
    this.catalog = catalog;
    for (const listener of this.listeners) listener(catalog);
    return true;
  }

  onChange(listener) { this.listeners.push(listener); }

  get currency() { return this.catalog?.currency || "EUR"; }

  /** Categories and their items in the shop's order (position, then name). */
  get categories() {
    return (this.catalog?.categories ?? []).slice().sort(byPosition)
      .map((c) => ({ ...c, items: c.items.slice().sort(byPosition) }));
  }

  item(id) {
    for (const category of this.catalog?.categories ?? []) {
      const item = category.items.find((i) => i.id === id);
      if (item) return item;
    }
    return null;
  }
}

export class CatalogEditor {
  constructor({ store, api, refresh }) {
    this.store = store;
    this.api = api;
    this.refresh = refresh; // () => GET /catalog applied to the store (the bus brings it too)
    this.editing = null; // id of the category or item in the open dialog (null: a new one)
    // Handlers as properties: a new session's editor replaces the last one's.
    $("category-new").onclick = () => this.editCategory(null);
    $("item-new").onclick = () => this.editItem(null);
    $("category-form").onsubmit = (e) => { e.preventDefault(); this.saveCategory(); };
    $("item-form").onsubmit = (e) => { e.preventDefault(); this.saveItem(); };
    $("if-option-add").onclick = () => this.addOption({ name: "", price_delta_cents: 0 }, true);
    $("cf-delete").onclick = (e) => this.armDelete(e.target, () => this.api.deleteCategory(this.editing), "category-form");
    $("if-delete").onclick = (e) => this.armDelete(e.target, () => this.api.deleteItem(this.editing), "item-form");
    for (const button of document.querySelectorAll("dialog [data-close]")) {
      button.onclick = () => button.closest("dialog").close();
    }
    $("catalog-list").onclick = (e) => this.onListClick(e);
    $("catalog-list").onchange = (e) => e.target.dataset.action === "available" && this.flip(e.target);
    store.onChange(() => this.render());
    this.render();
  }

  render() {
    const categories = this.store.categories;
    const updated = this.store.catalog?.updated_at;
    $("catalog-updated").textContent = updated ? `Updated ${when(updated)}` : "";
    $("catalog-empty").hidden = !this.store.catalog || categories.length > 0;
    $("item-new").disabled = categories.length === 0;
    $("catalog-list").replaceChildren(...categories.map((category) => this.renderCategory(category)));
  }

  renderCategory(category) {
    const section = el("section", "card category");
    section.dataset.category = category.id;
    const head = el("div", "category-head");
    const edit = el("button", "ghost", "Edit");
    edit.type = "button";
    edit.dataset.action = "edit-category";
    edit.setAttribute("aria-label", `Edit category ${category.name}`);
    const add = el("button", "ghost", "Add item");
    add.type = "button";
    add.dataset.action = "add-item";
    add.setAttribute("aria-label", `Add an item to ${category.name}`);
    head.append(el("h3", "", category.name), edit, add);
    const list = el("ul", "catalog-items");
    list.append(...category.items.map((item) => this.renderItem(item)));
    if (!category.items.length) list.append(el("li", "hint", "No items in this category."));
    section.append(head, list);
    return section;
  }

  renderItem(item) {
    const row = el("li", "catalog-item");
    row.dataset.item = item.id;
    row.dataset.available = String(item.available);
    const text = el("div", "catalog-item-text");
    text.append(el("strong", "item-name", item.name));
    if (item.description) text.append(el("span", "hint item-description", item.description));
    if (item.options?.length) {
      const options = item.options.map((o) => `${o.name}${o.price_delta_cents ? ` ${signed(o.price_delta_cents, this.store.currency)}` : ""}`);
      text.append(el("span", "item-options", options.join(" · ")));
    }
    const price = el("span", "item-price", money(item.price_cents, this.store.currency));
    const toggle = el("label", "switch");
    const box = el("input");
    box.type = "checkbox";
    box.setAttribute("role", "switch");
    box.dataset.action = "available";
    box.checked = item.available;
    box.setAttribute("aria-label", `${item.name} available`);
    toggle.append(box, el("span", "switch-text", item.available ? "Available" : "Sold out"));
    const edit = el("button", "ghost", "Edit");
    edit.type = "button";
    edit.dataset.action = "edit-item";
    edit.setAttribute("aria-label", `Edit ${item.name}`);
    row.append(text, price, toggle, edit);
    return row;
  }

  onListClick(e) {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const categoryId = button.closest("[data-category]")?.dataset.category;
    const action = button.dataset.action;
    if (action === "edit-category") {
      this.editCategory(this.store.categories.find((c) => c.id === categoryId));
    } else if (action === "add-item") {
      this.editItem(null, categoryId);
    } else if (action === "edit-item") {
      this.editItem(this.store.item(button.closest("[data-item]").dataset.item));
    }
  }

  /** The sold-out switch: PATCH available; the switch goes back if the server refuses. */
  async flip(box) {
    const id = box.closest("[data-item]").dataset.item;
    const available = box.checked;
    box.disabled = true;
    $("catalog-error").hidden = true;
    try {
      await this.api.setAvailable(id, available);
      await this.refresh();
    } catch (err) {
      box.checked = !available;
      $("catalog-error").textContent = err.explain ? err.explain() : String(err);
      $("catalog-error").hidden = false;
    } finally {
      box.disabled = false;
    }
  }

  open(dialog, form, title, id) {
    this.editing = id;
    clearErrors($(form));
    $(form).querySelector(".form-error").hidden = true;
    $(dialog).querySelector("h2").textContent = title;
    const remove = $(form).querySelector("button.danger");
    remove.hidden = !id;
    disarm(remove);
    $(dialog).showModal();
  }

  editCategory(category) {
    $("cf-name").value = category?.name ?? "";
    $("cf-position").value = category ? String(category.position) : String(this.store.categories.length);
    this.open("category-dialog", "category-form", category ? `Edit ${category.name}` : "New category", category?.id ?? null);
    $("cf-name").focus();
  }

  editItem(item, categoryId) {
    const categories = this.store.categories;
    $("if-category").replaceChildren(...categories.map((c) => {
      const option = el("option", "", c.name);
      option.value = c.id;
      return option;
    }));
    const category = item ? categories.find((c) => c.items.some((i) => i.id === item.id)) : null;
    $("if-category").value = category?.id ?? categoryId ?? categories[0]?.id ?? "";
    $("if-name").value = item?.name ?? "";
    $("if-description").value = item?.description ?? "";
    $("if-price").value = item ? centsToInput(item.price_cents) : "";
    const siblings = categories.find((c) => c.id === $("if-category").value)?.items.length ?? 0;
    $("if-position").value = String(item?.position ?? siblings);
    $("if-available").checked = item?.available ?? true;
    $("if-options").replaceChildren();
    for (const option of item?.options ?? []) this.addOption(option, false);
    this.open("item-dialog", "item-form", item ? `Edit ${item.name}` : "New item", item?.id ?? null);
    $("if-name").focus();
  }

  addOption(option, focus) {
    const list = $("if-options");
    if (list.children.length >= MAX_OPTIONS) return;
    const row = el("li", "option-row");
    const name = el("input");
    name.maxLength = 60;
    name.value = option.name;
    name.dataset.field = "name";
    name.setAttribute("aria-label", "Option name");
    const delta = el("input");
    delta.inputMode = "decimal";
    delta.maxLength = 12;
    delta.value = centsToInput(option.price_delta_cents);
    delta.dataset.field = "price_delta_cents";
    delta.setAttribute("aria-label", "Option price change (+/-)");
    const remove = el("button", "ghost", "Remove");
    remove.type = "button";
    remove.setAttribute("aria-label", "Remove this option");
    remove.onclick = () => { row.remove(); this.numberOptions(); };
    row.append(name, delta, remove, el("p", "field-error"));
    list.append(row);
    this.numberOptions();
    $("if-option-add").disabled = list.children.length >= MAX_OPTIONS;
    if (focus) name.focus();
  }

  /** Error places follow the rows' order: options.<i>.name, options.<i>.price_delta_cents. */
  numberOptions() {
    [...$("if-options").children].forEach((row, i) => {
      row.querySelector(".field-error").dataset.errorFor = `options.${i}`;
      row.dataset.index = String(i);
    });
    $("if-option-add").disabled = $("if-options").children.length >= MAX_OPTIONS;
  }

  itemBody() {
    const form = $("item-form");
    clearErrors(form);
    let ok = true;
    const price = inputToCents($("if-price").value);
    if (price === null) ok = !fieldError(form, "price_cents", "Enter a price like 12.50 (0 or more).");
    const options = [...$("if-options").children].map((row, i) => {
      const delta = inputToCents(row.querySelector('[data-field="price_delta_cents"]').value || "0", { signed: true });
      if (delta === null) ok = !fieldError(form, `options.${i}`, "Enter a price change like 1.50 or -0.50.");
      return { name: row.querySelector('[data-field="name"]').value.trim(), price_delta_cents: delta };
    });
    const position = Number.parseInt($("if-position").value, 10);
    const body = {
      category_id: $("if-category").value,
      name: $("if-name").value.trim(),
      description: $("if-description").value.trim(),
      price_cents: price,
      available: $("if-available").checked,
      options,
    };
    if (Number.isInteger(position)) body.position = position;
    return ok ? body : null;
  }

  async saveItem() {
    const body = this.itemBody();
    if (!body) {
      $("item-form").querySelector("[aria-invalid]")?.focus();
      return;
    }
    await this.save("item-dialog", "item-form", () => this.api.saveItem(this.editing, body));
  }

  async saveCategory() {
    const position = Number.parseInt($("cf-position").value, 10);
    const body = { name: $("cf-name").value.trim() };
    if (Number.isInteger(position)) body.position = position;
    await this.save("category-dialog", "category-form", () => this.api.saveCategory(this.editing, body));
  }

  async save(dialog, form, call) {
    const buttons = $(form).querySelectorAll("button");
    for (const button of buttons) button.disabled = true;
    try {
      await call();
      $(dialog).close();
      await this.refresh();
    } catch (err) {
      showProblem($(form), $(form).querySelector(".form-error"), err, MESSAGES);
    } finally {
      for (const button of buttons) button.disabled = false;
      this.numberOptions();
    }
  }

  /** Delete takes two clicks: the first arms the button for a few seconds. */
  armDelete(button, call, form) {
    if (button.dataset.armed !== "true") {
      button.dataset.armed = "true";
      button.dataset.label = button.textContent;
      button.textContent = "Click again to delete";
      button.timer = setTimeout(() => disarm(button), 5000);
      return;
    }
    disarm(button);
    const dialog = button.closest("dialog").id;
    this.save(dialog, form, call);
  }
}

function disarm(button) {
  clearTimeout(button.timer);
  if (button.dataset.armed === "true") button.textContent = button.dataset.label;
  button.dataset.armed = "false";
}

function signed(cents, currency) {
  return `${cents < 0 ? "−" : "+"}${money(Math.abs(cents), currency)}`;
}
