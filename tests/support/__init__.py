"""Helpers shared by the tests (and the benchmarks): plain functions and values, no fixtures.

- ``assertions``: a command's result is a success, a clean refusal, or names no arm.
- ``blinded_path``: dated randomizations, arms read as the key holder, refusals that change
  nothing, the trial with four participants.
- ``concurrency``: the trial eight investigators fill at once, their worker processes, and
  the checks that no slot was lost, doubled or taken out of list order.
- ``database``: which database, fresh ones, dumps, SQL and the audit trail behind the
  service's back.
- ``designs``: the one design-file builder (imported by ``benchmarks/`` too).
- ``exosome``: the shipped exosome-ms design's names, arms, eligible answers and arm words.
- ``processes``: the real CLI in a process of its own; the real trial server
  (``server_process``, ``serve_process``) and remote CLI processes talking to it.
- ``remote``: the in-process CLI runner with ``--server`` (``RemoteRun``).
- ``trial``: a trial's files, its users, the in-process CLI runner, prepared trials.

Fixtures stay in ``tests/conftest.py``.
"""
