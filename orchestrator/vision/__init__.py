"""Image analyses: pure functions on decoded numpy images (BGR, uint8), no file I/O."""
