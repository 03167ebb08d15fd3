"""Errors that end a run because of what was asked for, not because of a bug.

A :class:`UsageError` (bad data rows, a run folder that belongs to another configuration, a comparison
with nothing to compare) carries a message that says what is wrong and how to fix it. The entry points
print that message once, without a traceback, and exit with status 1 (``utils.run.task_wrapper`` logs it,
``utils.run.exit_on_usage_error`` ends the process); any other exception is a crash and keeps its traceback.
"""

from __future__ import annotations


class UsageError(Exception):
    """The run cannot go on as asked; the message names the cause and the fix."""
