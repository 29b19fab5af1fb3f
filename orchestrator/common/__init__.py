"""What every stage shares: the error type, paths, did-you-mean, the project file, worker threads, the process
runner, atomic files, versioned JSON records and HTML pages."""
