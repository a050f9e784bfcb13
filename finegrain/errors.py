"""The one exception type for mistakes a user can fix.

Library code raises `UserError` with a one-line message saying what is wrong and how to fix
it; the CLI prints that line and exits non-zero without a traceback. Anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (path, name, option, file contents)."""
