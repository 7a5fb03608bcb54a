"""Embedded MQTT broker (amqtt) for development and tests.

It serves MQTT over TCP and over WebSocket (``ws://host:port/mqtt``, what browsers
running mqtt.js use). In production Mosquitto replaces it. Per the dependency rule
this package knows nothing of ``order_service``: it reads only its own environment
variables (and, from the next issue on, the users and ACL files).
"""
