"""The `medsynth` command line: one thin module per command group."""
