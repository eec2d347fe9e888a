"""Training: the flat loop (:mod:`~rnnexp.train.loop`), the updates that change the parameters
(:mod:`~rnnexp.train.updates`, with clipping, regularizers and the ridge closed form), the
callbacks that watch (:mod:`~rnnexp.train.callbacks`), and the run's records: checkpoints,
``metrics.json``, resume and sweep bookkeeping."""
