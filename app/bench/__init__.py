"""The benchmark (python -m app bench): a real server over HTTP, the encoder's limit and the indexes' peers."""
