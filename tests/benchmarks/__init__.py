"""authsidecar benchmark: `make bench`."""
