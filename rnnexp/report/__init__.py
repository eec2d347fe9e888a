"""``rnnexp report``: summarize a sweep (a Hydra multirun folder) over seeds.

A sweep folder ``outputs/multirun/<timestamp>/`` holds Hydra's ``multirun.yaml`` (the
sweep as asked for) and one job folder per job that started (``0``, ``1``, ...), each with
``.hydra/overrides.yaml`` and ``metrics.json``. The modules here are pure steps that the
command (:func:`rnnexp.cli.report.run`) chains: :mod:`~rnnexp.report.load` expands
``multirun.yaml`` into the jobs the sweep asked for and reads the job folders into ``Job``
records (those that never started as ``missing``); :mod:`~rnnexp.report.aggregate` finds
the swept keys, groups the jobs by every swept key but the seed, aggregates them and lays
one value out on rows x columns (the pivot); :mod:`~rnnexp.report.render` renders the
result as rich tables, markdown and CSV. Nothing here imports torch, so the command starts
fast.
"""
