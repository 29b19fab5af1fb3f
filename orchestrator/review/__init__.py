"""The review of a run or sweep: reading the run folders, the sample grid, its pictures and the review page."""
