"""The ``amos-autoseg`` command line: one module per subcommand, heavy imports inside ``run``."""
