"""The one exception type that reaches the user as a single line instead of a traceback."""


class RnnexpError(Exception):
    """A problem with the user's input (config, data, checkpoint, ...).

    The message names the problem and the fix; the CLI prints it as one line and exits
    with a non-zero code. Anything else that escapes is a bug and keeps its traceback.
    """


def print_error(error: str | BaseException, tail: str = "") -> None:
    """The one way an error reaches the user: ``error: <message>`` in one line on stderr,
    the message printed as text (rich markup such as ``rnnexp[ner]`` is not interpreted)."""
    from rich.console import Console  # rich only when there is something to print
    from rich.markup import escape

    message = f"[bold red]error:[/] {escape(str(error) + tail)}"
    Console(stderr=True).print(message, highlight=False, soft_wrap=True)
