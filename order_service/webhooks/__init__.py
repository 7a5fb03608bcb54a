"""Webhooks: endpoints, deliveries and their signing (``model``), and the delivery worker,
a process of its own (``python -m order_service.webhooks``, ``worker``) that follows the
event log from a cursor in the database and POSTs each event to its subscribers.

May import: ``orders`` (the event log), ``store``, ``accounts``, ``contract``, the shared
modules.
"""
