"""The soak (issue 12): many requests, agency failures and process faults on a stack of its own,
then proof from outside the engine that nothing was lost, done twice or left stuck.

``python -m benchmarks.soak`` (``make soak``, ``nwd soak``); :mod:`benchmarks.soak.cli` has
the options, docs/reliability.md ("Soak") the figures.
"""
