"""The run folder runs/<name>/: its record, and what sd-scripts writes into it (samples, LoRA files, events)."""
