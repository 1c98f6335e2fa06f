"""The front door: the `rayformers` command (`main`) and the commands it runs.

This package sits above every stage: it imports them lazily, inside each command, so `rayformers --help`
and `rayformers validate` start without torch or Ray. `quickstart` runs the whole flow on sample data.
"""

from rayformers.cli.main import main

__all__ = ["main"]
