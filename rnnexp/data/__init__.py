"""Data plumbing shared by the tasks: the one vocabulary (:mod:`~rnnexp.data.vocab`), batch
streams (:mod:`~rnnexp.data.streams`), the text readers (:mod:`~rnnexp.data.text`) and the
checked download cache (:mod:`~rnnexp.data.download`)."""
