"""What every stage shares: the error type, paths, did-you-mean, the project file, worker threads."""
