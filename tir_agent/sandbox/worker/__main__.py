"""``python -m tir_agent.sandbox.worker``: the template's entry point."""

from tir_agent.sandbox.worker.template import main

main()
