"""Model selection on cross-validation: which configuration, or pair of configurations, to predict with.

:func:`~amos_autoseg.selection.find_best.find_best` is ``amos-autoseg find-best`` (nnU-Net's
``nnUNetv2_find_best_configuration``): :mod:`.candidates` finds the trained configurations and pairs,
:mod:`.scoring` scores their cross-validation predictions, :mod:`.report` writes ``EXP/best.md``. This package
reads what training and inference wrote; neither imports it.
"""
