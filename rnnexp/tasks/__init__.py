"""Tasks: data, loss, metrics and pictures for one kind of sequence problem.

A task is built from ``conf/task/<name>.yaml`` with Hydra's ``instantiate`` and
implements :class:`rnnexp.tasks.base.Task`. Adding a task: one module here, one yaml in
``conf/task/``, one folder in ``tasks/`` (README with definition, source, published
numbers) and one test; the training loop does not change.
"""

from rnnexp.tasks.base import Batch, Task

__all__ = ["Batch", "Task"]
