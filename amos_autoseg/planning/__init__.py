"""Planning: fingerprint -> :class:`~amos_autoseg.planning.plans.Plans` (spacing, topology, patch, batch)."""
