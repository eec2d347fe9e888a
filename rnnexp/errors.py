"""The one exception type that reaches the user as a single line instead of a traceback."""


class RnnexpError(Exception):
    """A problem with the user's input (config, data, checkpoint, ...).

    The message names the problem and the fix; the CLI prints it as one line and exits
    with a non-zero code. Anything else that escapes is a bug and keeps its traceback.
    """
