"""Errors a user can cause. The CLI prints them as one line and exits non-zero, no traceback."""


class UserError(Exception):
    """A runtime problem with the user's input (paths, files, data): exit code 1."""

    exit_code = 1


class UsageError(UserError):
    """Invalid or conflicting command-line arguments: exit code 2, like argparse."""

    exit_code = 2
