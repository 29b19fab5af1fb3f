"""The training stage: typed run configuration, rendering, preflight checks and the accelerate launch."""
