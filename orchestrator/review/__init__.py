"""The review of a run or sweep: the sample grid, its pictures and the review page."""
