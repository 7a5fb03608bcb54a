"""orderbus order service: REST API, models and the outbox relay."""
