"""One module per broker behind one Broker protocol.

``wireframe.jobs.broker.open_broker`` imports ``wireframe.jobs.brokers.<scheme>``
only when a URL names that scheme, so no broker is a dependency of the runtime.
"""
