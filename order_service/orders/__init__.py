"""Orders: creating them and moving them through the lifecycle (``service``), the events
each change writes to the outbox and the agents' worklists (``events``), who may see
which order (``access``), the promised and delivery times (``eta``).

Domain rules raise ``order_service.errors``, never HTTP. A new order field, a new event
or a new lifecycle rule starts here (the statuses themselves: ``order_service.lifecycle``).

May import: ``store``, ``accounts``, ``contract``, the shared modules.
"""
