"""Patch sampling and batch loading for training: pure batches per step, served by worker processes.

``BatchSource`` (in ``batches``) makes the batch of a step; ``BatchLoader`` iterates over steps with worker
processes or serially. ``sampling`` holds the pure rules (seeds, oversampling, DDP split, crop boxes).
"""
