"""User-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class UserError(Exception):
    """A mistake in the user's input (file, value, option). The message says what to do."""
