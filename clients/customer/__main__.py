"""python -m clients.customer: place and follow orders over REST, as a customer.

    python -m clients.customer --user ada --password-file ada.pw menu
    python -m clients.customer --user ada --password-file ada.pw place \\
        --name "Ada" --phone "+1 555 0100" --address "1 Main St" \\
        --item "Margherita:2:Large,Extra mozzarella" --item "Lemonade" --notes "ring twice"
    python -m clients.customer --user ada --password-file ada.pw list
    python -m clients.customer --user ada --password-file ada.pw show ord_...
    python -m clients.customer --user ada --password-file ada.pw cancel ord_...
    python -m clients.customer --user ada --password-file ada.pw watch ord_...

``place`` orders items of the catalog (``menu`` lists it), each as
``ITEM[:QUANTITY[:OPTION,OPTION...]]``, the item and its options by name or id; the
server prices them. ``place`` sends an ``Idempotency-Key`` (``--key``, or a new one it prints): retrying
with the same key returns the original order instead of placing a second one.
``watch`` follows the order live over MQTT (the customer's own broker login) and exits
0 once it is delivered, cancelled, rejected or failed.
Every API error is printed as its title, detail, the fields at fault and, for a
refused transition, the allowed next states; the exit code is 1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid

import click

from contract.address import BrokerAddress

from ..rest import DEFAULT_API, Api, ApiError, ApiUnreachable


def _find(entries: list[dict], wanted: str, what: str, param: str) -> dict:
    """The entry whose id is ``wanted``, or whose name is (ignoring case)."""
    for entry in entries:
        if entry["id"] == wanted:
            return entry
    named = [e for e in entries if e["name"].casefold() == wanted.strip().casefold()]
    if len(named) != 1:
        known = ", ".join(sorted(e["name"] for e in entries)) or "none"
        why = "several are called" if named else "there is no"
        raise click.BadParameter(f"{why} {what} {wanted!r}; known: {known}", param_hint=param)
    return named[0]


def parse_item(text: str, catalog: dict) -> dict:
    """``ITEM[:QUANTITY[:OPTION,OPTION...]]`` as a catalog line (``item_id``, ``quantity``,
    ``option_ids``); the item and its options by name or id."""
    name, _, rest = text.partition(":")
    quantity_text, _, options_text = rest.partition(":")
    items = [i for c in catalog["categories"] for i in c["items"]]
    item = _find(items, name, "item", "--item")
    try:
        quantity = int(quantity_text) if quantity_text.strip() else 1
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: write ITEM[:QUANTITY[:OPTION,OPTION]], e.g. 'Margherita:2:Large'", param_hint="--item"
        ) from None
    wanted = [o for o in options_text.split(",") if o.strip()]
    options = [_find(item["options"], o, f"option of {item['name']}", "--item")["id"] for o in wanted]
    return {"item_id": item["id"], "quantity": quantity, "option_ids": options}


def _money(cents: int, currency: str = "EUR") -> str:
    return f"{cents / 100:.2f} {currency}"


def _print_order(order: dict) -> None:
    c = order["customer"]
    number = f"#{order['number']}  " if order.get("number") is not None else ""
    click.echo(f"{number}{order['id']}  {order['status']}")
    click.echo(f"  for {c.get('name', '')}, {c.get('address', '')}  {c.get('phone', '')}")
    for item in order["items"]:
        options = f" ({', '.join(item['options'])})" if item.get("options") else ""
        click.echo(
            f"  {item['quantity']} x {item['name']}{options}"
            f" @ {_money(item['unit_price_cents'], order['currency'])}"
        )
    click.echo(f"  total {_money(order['total_cents'], order['currency'])}")
    if order.get("notes"):
        click.echo(f"  notes: {order['notes']}")
    if order.get("eta"):
        click.echo(f"  ETA {order['eta']}")


class Session:
    def __init__(self, api: Api, username: str, password: str | None, as_json: bool) -> None:
        self.api, self.username, self.password, self.as_json = api, username, password, as_json

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        headers: dict | None = None,
        login: bool = True,
    ) -> dict:
        """One API call; logs in first unless ``login`` is off (the catalog is public)."""
        try:
            if self.api.token is None and login:
                if not self.password:
                    raise click.UsageError(
                        "give --password-file or --password (or ORDERBUS_CUSTOMER_PASSWORD)"
                    )
                self.api.login(self.username, self.password)
            return self.api.request(method, path, body, headers)
        except ApiError as exc:
            raise click.ClickException(exc.explain()) from None
        except ApiUnreachable as exc:
            raise click.ClickException(
                f"the API does not answer: {exc}. Is `make run` running? (--api)"
            ) from None

    def broker_login(self) -> dict:
        """A read-only broker login for this customer (its own feed and the catalog): the one
        logging in brings, else a new one for this token."""
        if self.api.token is None and self.password:
            try:
                answer = self.api.login(self.username, self.password)
            except ApiError as exc:
                raise click.ClickException(exc.explain()) from None
            except ApiUnreachable as exc:
                raise click.ClickException(f"the API does not answer: {exc} (--api)") from None
            if answer.get("mqtt"):
                return answer["mqtt"]
        return self.call("POST", "/auth/mqtt-credentials")

    def show(self, value: dict, printer) -> None:
        if self.as_json:
            click.echo(json.dumps(value, indent=2, sort_keys=True))
        else:
            printer(value)


@click.group()
@click.option("--api", default=DEFAULT_API, show_default=True, envvar="ORDERBUS_API")
@click.option("--user", "username", required=True, envvar="ORDERBUS_CUSTOMER_USER", help="your username")
@click.option("--password-file", type=click.File(), help="file holding your password")
@click.option("--password", envvar="ORDERBUS_CUSTOMER_PASSWORD", help="or the password itself")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def main(ctx, api, username, password_file, password, as_json) -> None:
    """Place an order, list your orders, show one, cancel one, watch one live."""
    secret = password_file.read().strip() if password_file else password
    ctx.obj = Session(Api(api), username, secret, as_json)


@main.command()
@click.option("--name", required=True, help="who receives the order")
@click.option("--phone", default="", help="a phone number for the agent")
@click.option("--address", required=True, help="delivery address")
@click.option(
    "--item", "items", multiple=True, required=True, help="ITEM[:QUANTITY[:OPTION,...]] from menu, repeatable"
)
@click.option("--notes", default="", help="for the kitchen or the agent")
@click.option("--key", help="Idempotency-Key; reuse it to retry safely (default: a new one)")
@click.pass_obj
def place(session: Session, name, phone, address, items, notes, key) -> None:
    """Place an order."""
    key = key or uuid.uuid4().hex
    catalog = session.call("GET", "/catalog")
    body = {
        "customer": {"name": name, "phone": phone, "address": address},
        "items": [parse_item(i, catalog) for i in items],
        "notes": notes,
    }
    order = session.call("POST", "/orders", body, {"Idempotency-Key": key})
    if not session.as_json:
        click.echo(f"placed (Idempotency-Key {key}; retry with --key {key} to be safe)")
    session.show(order, _print_order)


@main.command()
@click.pass_obj
def menu(session: Session) -> None:
    """The catalog: what you may order, with prices and options."""

    def printer(catalog: dict) -> None:
        currency = catalog["currency"]
        if not catalog["categories"]:
            click.echo("the catalog is empty")
        for category in catalog["categories"]:
            click.echo(category["name"])
            for item in category["items"]:
                sold_out = "" if item["available"] else "  (sold out)"
                click.echo(f"  {item['name']:<28} {_money(item['price_cents'], currency):>12}{sold_out}")
                for option in item["options"]:
                    click.echo(
                        f"      + {option['name']:<24} {_money(option['price_delta_cents'], currency):>12}"
                    )

    session.show(session.call("GET", "/catalog", login=False), printer)


@main.command("list")
@click.option("--status", help="only these statuses, comma-separated")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@click.pass_obj
def list_orders(session: Session, status, limit) -> None:
    """Your orders, newest first."""
    query = f"?limit={limit}" + (f"&status={status}" if status else "")
    page = session.call("GET", f"/orders{query}")

    def printer(value: dict) -> None:
        if not value["orders"]:
            click.echo("no orders")
        for o in value["orders"]:
            number = f"#{o['number']}" if o.get("number") is not None else ""
            click.echo(
                f"{number:>6}  {o['id']}  {o['status']:<10} "
                f"{_money(o['total_cents'], o['currency']):>12}  {o['created_at']}"
            )

    session.show(page, printer)


@main.command()
@click.argument("order_id")
@click.pass_obj
def show(session: Session, order_id) -> None:
    """One order and its status."""
    session.show(session.call("GET", f"/orders/{order_id}"), _print_order)


@main.command()
@click.argument("order_id")
@click.option("--reason", default="", help="why (shown to the shop)")
@click.pass_obj
def cancel(session: Session, order_id, reason) -> None:
    """Cancel an order (allowed while it is still placed)."""
    order = session.call("PATCH", f"/orders/{order_id}/status", {"status": "cancelled", "reason": reason})
    if not session.as_json:
        click.echo("cancelled")
    session.show(order, _print_order)


@main.command()
@click.argument("order_id")
@click.option("--broker", help="broker URL (default: the tcp_url of your broker login)")
@click.option("--ca-file", envvar="ORDERBUS_MQTT_CA_FILE", help="CA file for an mqtts:// or wss:// broker")
@click.option("--timeout", type=click.FloatRange(min=0), help="give up after this many seconds (exit 3)")
@click.pass_obj
def watch(session: Session, order_id, broker, ca_file, timeout) -> None:
    """Follow an order live until it is delivered, cancelled or failed."""
    from . import watch as live

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # reconnects are told on stderr
    login = session.broker_login()
    order = session.call("GET", f"/orders/{order_id}")
    watcher = live.Watcher(order["id"], click.echo, session.as_json)
    if not session.as_json:
        number = f"#{order['number']}  " if order.get("number") else ""
        click.echo(f"{number}{order['id']}: following it live (Ctrl-C to stop)")
    if order["status"] in live.FINISHED:  # finished already: its feed may have let it go
        watcher.offer({"version": 1, "orders": [{**order, "courier": None, "reason": None}]})
        return
    me = session.call("GET", "/auth/me")
    address = BrokerAddress.parse(broker or ",".join(login.get("tcp_urls") or [login["tcp_url"]]), ca_file)
    address = dataclasses.replace(address, username=login["username"], password=login["password"])
    try:
        finished = live.follow(address, me["id"], watcher, timeout)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if not finished:
        click.echo(f"{order_id} is not finished after {timeout:g} s", err=True)
        raise SystemExit(3)


if __name__ == "__main__":
    main()
