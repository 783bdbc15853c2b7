"""Reading and writing what outlives a process: weights (ours and the authors' PyTorch files),
snapshots of a training run, and the lock that keeps one writer per snapshot directory."""
