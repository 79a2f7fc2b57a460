"""Subcommands of the ``prunebench`` CLI, one module per group (see ``prunebench.search.cli``)."""
