"""The boundary with kohya-ss sd-scripts: the generated contract, validation of rendered files, self-checks."""
