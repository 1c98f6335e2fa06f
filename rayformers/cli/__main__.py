"""`python -m rayformers.cli`: the `rayformers` command."""

import sys

from rayformers.cli.main import main

sys.exit(main())
