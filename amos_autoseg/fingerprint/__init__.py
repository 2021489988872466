"""Dataset fingerprint: spacings, shapes and foreground intensity statistics per modality and phase."""
