"""The networks, pure torch: a cell (:mod:`rnnexp.cells`) wrapped into a sequence model with
its input encoder and read-out (:mod:`~rnnexp.nn.model`, :mod:`~rnnexp.nn.encoders`,
:mod:`~rnnexp.nn.crf`), and the one-step stepper that generates text
(:mod:`~rnnexp.nn.generation`). Nothing here reads configs, files or tasks' data."""
