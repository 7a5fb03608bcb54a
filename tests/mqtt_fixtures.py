"""Broker, relay and subscriber fixtures (real amqtt on ephemeral ports, real paho)."""
