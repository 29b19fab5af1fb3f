"""Sweeps: a grid or list of runs, validated together, trained in turn or emitted as a Slurm array."""
