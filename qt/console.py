"""The rich console every `qt` command prints to."""

from __future__ import annotations

import os

from rich.console import Console

# Rich wraps at 80 columns when the output is not a terminal (`qt demo | tee run.log`, CI logs):
# the demo's trade table and the status tables are wider and would be cut to "tra…".
PIPED_WIDTH = 160


def output_console() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPED_WIDTH)
    return console
