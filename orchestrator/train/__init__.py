"""The training stage: typed run configuration, presets and tiers, step arithmetic, rendering, preflight checks,
the run plan, the accelerate command, launch and resume."""
