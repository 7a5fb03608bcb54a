// The menu: categories as chips, items as cards (sold-out ones shown as such), and the
// sheet where an item's options and quantity are picked.

import { el, money } from "/admin/js/format.js";
import { findItem } from "./cart.js";

const $ = (id) => document.getElementById(id);

export class Menu {
  constructor({ cart }) {
    this.cart = cart;
    this.catalog = null;
    this.open = null; // the item in the sheet
    this.quantity = 1;
    $("sheet-close").addEventListener("click", () => this.close());
    $("sheet").addEventListener("click", (e) => { if (e.target.id === "sheet") this.close(); });
    $("qty-minus").addEventListener("click", () => this.setQuantity(this.quantity - 1));
    $("qty-plus").addEventListener("click", () => this.setQuantity(this.quantity + 1));
    $("sheet-options").addEventListener("change", () => this.renderSheetPrice());
    $("sheet-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const item = this.open && findItem(this.catalog, this.open);
      if (!item?.available) return;
      const options = [...$("sheet-options").querySelectorAll("input:checked")].map((i) => i.value);
      this.cart.add(item.id, options, this.quantity);
      this.close();
    });
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") this.close(); });
  }

  /** A catalog body (REST or the topic): the newest version wins. */
  apply(catalog) {
    if (!catalog || !Array.isArray(catalog.categories)) return false;
    if (this.catalog && catalog.version < this.catalog.version) return false;
    this.catalog = catalog;
    this.render();
    return true;
  }

  render() {
    const catalog = this.catalog;
    const categories = [...catalog.categories].sort((a, b) => a.position - b.position)
      .filter((c) => c.items.length);
    $("menu-status").hidden = categories.length > 0;
    $("menu-status").textContent = "The menu is empty for now.";
    $("categories").replaceChildren(...categories.map((c) => {
      const chip = el("a", "chip", c.name);
      chip.href = `#cat-${c.id}`;
      chip.addEventListener("click", (e) => {
        e.preventDefault(); // the hash is the page's route: scroll instead
        document.getElementById(`cat-${c.id}`)?.scrollIntoView({ behavior: "smooth" });
      });
      return chip;
    }));
    $("menu").replaceChildren(...categories.map((c) => {
      const section = el("section", "category");
      section.id = `cat-${c.id}`;
      section.dataset.category = c.id;
      const items = [...c.items].sort((a, b) => a.position - b.position);
      section.append(el("h2", "category-name", c.name), el("ul", "items"));
      section.lastChild.append(...items.map((item) => this.card(item, catalog.currency)));
      return section;
    }));
    if (this.open) this.renderSheet();
  }

  card(item, currency) {
    const li = el("li", `item${item.available ? "" : " sold-out"}`);
    li.dataset.item = item.id;
    li.dataset.available = String(item.available);
    const text = el("div", "item-text");
    text.append(el("h3", "item-name", item.name));
    if (item.description) text.append(el("p", "item-desc", item.description));
    const price = el("p", "item-price", money(item.price_cents, currency));
    if (item.options?.length) price.append(el("span", "hint", " · options"));
    text.append(price);
    const button = el("button", "add", item.available ? "Add" : "Sold out");
    button.type = "button";
    button.disabled = !item.available;
    button.setAttribute("aria-label", item.available ? `Add ${item.name}` : `${item.name} is sold out`);
    button.addEventListener("click", () => this.show(item.id));
    li.append(text, button);
    return li;
  }

  show(itemId) {
    this.open = itemId;
    this.quantity = 1;
    this.renderSheet(true);
    $("sheet").hidden = false;
    $("sheet-add").focus();
  }

  close() {
    this.open = null;
    $("sheet").hidden = true;
  }

  setQuantity(n) {
    this.quantity = Math.max(1, Math.min(99, n));
    $("qty").textContent = String(this.quantity);
    this.renderSheetPrice();
  }

  renderSheet(fresh = false) {
    const item = findItem(this.catalog, this.open);
    if (!item) return this.close(); // removed from the menu while open
    $("sheet-title").textContent = item.name;
    $("sheet-desc").textContent = item.description || "";
    const box = $("sheet-options");
    const checked = new Set(fresh ? [] : [...box.querySelectorAll("input:checked")].map((i) => i.value));
    box.hidden = !item.options?.length;
    box.replaceChildren(el("legend", null, "Options"), ...(item.options || []).map((option) => {
      const label = el("label", "option");
      const input = el("input");
      input.type = "checkbox";
      input.value = option.id;
      input.checked = checked.has(option.id);
      const delta = option.price_delta_cents;
      label.append(input, el("span", null, option.name),
        el("span", "hint", delta ? `${delta > 0 ? "+" : "−"}${money(Math.abs(delta), this.catalog.currency)}` : ""));
      return label;
    }));
    $("qty").textContent = String(this.quantity);
    this.renderSheetPrice();
  }

  renderSheetPrice() {
    const item = findItem(this.catalog, this.open);
    if (!item) return;
    const chosen = new Set([...$("sheet-options").querySelectorAll("input:checked")].map((i) => i.value));
    const unit = item.price_cents + item.options.filter((o) => chosen.has(o.id))
      .reduce((sum, o) => sum + o.price_delta_cents, 0);
    const add = $("sheet-add");
    add.disabled = !item.available;
    add.textContent = item.available ? `Add ${this.quantity} · ${money(unit * this.quantity, this.catalog.currency)}` : "Sold out";
  }
}
