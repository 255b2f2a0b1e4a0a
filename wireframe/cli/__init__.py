"""The ``wireframe`` command: run a service with a live status view, check and draw its wiring,
run workers and inspect job brokers.

Modules, one idea each: :mod:`~wireframe.cli.app` (the typer commands),
:mod:`~wireframe.cli.target` (finding the service a TARGET names),
:mod:`~wireframe.cli.runner` (running it under a view, with Ctrl-C),
:mod:`~wireframe.cli.live` (the live status view), :mod:`~wireframe.cli.queues`
(per-queue counts for it), :mod:`~wireframe.cli.render` (reports and listings),
:mod:`~wireframe.cli.graph` (the wiring as tree, dot, JSON),
:mod:`~wireframe.cli.workers` (the service ``wireframe worker`` runs) and
:mod:`~wireframe.cli.progress` (bars for the progress of directive runs).
Nothing in the package imports this one.
"""

from wireframe.cli.app import app, main

__all__ = ["app", "main"]
