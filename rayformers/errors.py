"""The one base class of every mistake a user can fix.

Each stage raises its own subclasses (a bad config, bad data, a model that cannot be built, a checkpoint
that cannot be served, a cluster that cannot hold the workers ...), and each message says what was wrong
and how to fix it. The CLI catches `UserError`, however deep Ray wrapped it, and prints that message as
one line instead of a stack trace; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake the user can fix; the message names the field, the bad value and the fix."""

    def render(self) -> str:
        """What the CLI prints after `error: `."""
        text = str(self).strip()
        return text.splitlines()[0] if text else type(self).__name__
