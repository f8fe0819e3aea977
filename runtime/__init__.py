"""What every process of the engine needs to talk to Temporal and to each other.

- :mod:`runtime.settings`: the one settings model (every ``NWD_*`` variable);
- :mod:`runtime.temporal`: the client and its data converter (pydantic, encrypted, failures too);
- :mod:`runtime.codec`: the payload codec (AES-256-GCM);
- :mod:`runtime.messages`: the wire types between the front door, the workflow and the activities;
- :mod:`runtime.callback_tokens`: the agencies' single-use callback URLs;
- :mod:`runtime.metric_names`: the engine's metric names (constants, workflow-safe);
- :mod:`runtime.telemetry`: the Prometheus runtime and tracing;
- :mod:`runtime.process`: free ports and the one way out of a process that used a client.

Logging is :mod:`agency_kit.logs`, shared with the agencies.

It is imported by every composition root (``worker.py``, the intake, the CLI, the benchmarks)
and imports none of them.
"""
