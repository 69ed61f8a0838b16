"""``python -m tir_agent.service ARGS`` is ``tir-agent sandbox serve ARGS``."""

from __future__ import annotations

import sys

from tir_agent.cli import main

if __name__ == "__main__":
    sys.exit(main(["sandbox", "serve", *sys.argv[1:]]))
