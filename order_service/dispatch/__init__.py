"""Getting orders to agents: offers (``offers``), auto-assignment and late-order alerts
(``auto``), agent presence (``presence``), the business's dispatch settings (``settings``)
and the unit that runs the timers in the active relay (``timers``).

A new dispatch rule goes into ``auto`` (run by ``auto.tick``); a new setting into
``settings``. May import: ``orders``, ``outbox.wakeup``, ``store``, ``accounts``,
``contract``, the shared modules.
"""
