"""The system harness: orderbus's real processes, started on ephemeral ports in a fresh data dir.

Both the tests (tests/) and the load generator (clients.loadgen) start the system
through it: the broker (embedded or a Mosquitto from the repository's
mosquitto.conf), the relay and the API under granian, each a child process in its
own process group, plus the PostgreSQL helpers the benchmarks need. It is installed
code: it imports no test code and not pytest; the pytest fixtures built on it stay in
tests/.

- :mod:`harness.processes`: paths, ephemeral ports, the CLI, stopping a child
- :mod:`harness.system`: :class:`~harness.system.System` and :func:`~harness.system.make_system`
- :mod:`harness.mosquitto`: a Mosquitto from mosquitto.conf with ports and paths rewritten
- :mod:`harness.postgres`: the PostgreSQL server the tests and benchmarks use
- :mod:`harness.cluster`: three NATS nodes (JetStream, MQTT) of ``make run-cluster`` and the system on them
"""
