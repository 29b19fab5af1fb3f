"""The run folder runs/<name>/: its record (run.json), the sweep index (sweep.json), and what sd-scripts writes
into it (samples, LoRA files, TensorBoard events)."""
