"""The one exception type for mistakes a user can fix.

Library code raises `UserError` with a one-line message saying what is wrong and how to fix
it; the CLI prints that line and exits non-zero without a traceback. Anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (path, name, option, file contents)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (whole, never cut mid-word), or its type name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
