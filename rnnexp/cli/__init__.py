"""The ``rnnexp`` command: :mod:`~rnnexp.cli.main` holds the Typer app, and each
subcommand's work is one module here (``train``, ``evaluate``, ``sample``, ``predict``,
``report``, ``surface``); ``ls`` is a table in ``main``."""
