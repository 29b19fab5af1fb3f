"""The fields a synthetic set can be balanced over and --epoch's word for the best epoch: a module of its own,
without pandas, so that the CLI's option choices cost nothing to import (`medsynth --help`)."""

BALANCE_FIELDS = ("site", "sex", "age_band", "skin_tone", "diagnosis")
BEST_EPOCH = "best"  # --epoch best: the epoch with the lowest validation loss
