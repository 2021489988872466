"""Whole-pipeline runs (``demo``, ``benchmark``) composed from the stage subcommands."""
