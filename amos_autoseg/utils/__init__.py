"""Small helpers shared by every stage: atomic files, sharding, worker pools, logging."""
