"""What training and inference both run on: the device, the precision and the checkpoint file format.

Stage packages import this one and never each other in both directions: ``training`` (which uses ``inference``
for its final validation) and ``inference`` (which loads checkpoints training wrote) both depend on ``runtime``,
and ``runtime`` depends only on ``errors`` and ``utils``.
"""
