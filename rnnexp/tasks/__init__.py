"""Tasks: data, loss, metrics and pictures for one kind of sequence problem.

A task is built from ``conf/task/<name>.yaml`` with Hydra's ``instantiate`` and
implements :class:`rnnexp.tasks.base.Task`; its ``setup()`` returns the
:class:`rnnexp.tasks.base.TaskSpec` that the model is built from. Adding a task: one
module here, one yaml in ``conf/task/``, one folder in ``tasks/`` (README with definition,
source, published numbers) and one test; the training loop and the model builder do not
change.
"""

from rnnexp.tasks.base import (
    Batch,
    Generates,
    LabelsSentences,
    Task,
    TaskSpec,
    WritesPredictions,
)

__all__ = ["Batch", "Generates", "LabelsSentences", "Task", "TaskSpec", "WritesPredictions"]
