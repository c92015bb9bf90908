"""Subcommands of ``moe-retriever``: each module defines ``register(subparsers)``.

A module's ``register`` adds its parser and sets ``func`` to a handler returning an exit code.
"""
