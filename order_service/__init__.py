"""orderbus's order service: REST in, the outbox relay out to MQTT.

Rooms, from the ground up; a room imports only rooms below it, and every room may
import the shared modules (``config``, ``errors``, ``lifecycle``, ``faults``) and the
top-level ``contract`` package (docs/architecture.md has the picture):

- ``store/``     the database, models, migrations, backups
- ``accounts/``  users, passwords, tokens, broker logins and their files
- ``orders/``    creating and moving orders, their events (outbox rows), who sees what, ETA
- ``outbox/``    the relay that publishes the outbox in order; its lock and wake-up
- ``dispatch/``  offers, auto-assignment, presence, business settings, the timers
- ``webhooks/``  webhook endpoints and the delivery worker (its own process)
- ``api/``       HTTP only: the Flask app, views, schemas, problem+json, the dashboard
- ``ops/``       the command line: migrate, bootstrap, backups, preflight checks

Processes: ``api/app.py`` (under granian: ``api_server.py``), ``relay.py`` (``python -m
order_service.relay``), ``webhooks/`` (``python -m order_service.webhooks``) and the
CLI (``python -m order_service``).
"""
