"""The outbox relay: publishes every outbox row to the broker in commit order, QoS 1,
retained (``relay``); the relay lock that lets one of several relays publish
(``leader``); the datagram that wakes it after each commit (``wakeup``).

May import: ``store``, ``accounts`` (its own broker login), ``contract``, the shared
modules. It knows nothing of dispatch: units that must run in the active relay only are
handed to it as companions (``order_service/relay.py`` puts the process together).
"""
