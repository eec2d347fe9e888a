"""The ``rnnexp`` command: :mod:`~rnnexp.cli.main` holds the Typer app, and each subcommand's
work is one module here (``evaluate``, ``sample``, ``predict``, ``surface``)."""
