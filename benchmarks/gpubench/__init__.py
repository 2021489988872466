"""The pieces of ``benchmarks/gpu_bench.py`` (issue 15): one GPU benchmark of both tools in one call.

* :mod:`.common`: names, iteration windows, clocks and deadlines shared by every process of the bench;
* :mod:`.data`: the synthetic cases (``amos_autoseg.synth``) as arrays, nnU-Net's raw TIFF dataset, our plan
  (nnU-Net's, translated, or our planner's) and our preprocessing, all without SimpleITK;
* :mod:`.ours` and :mod:`.nnunet`: the worker processes that train and predict (one tool each);
* :mod:`.report`: the table of figures and targets;
* ``standins/``: import-only modules for what nnU-Net imports but the bench never calls.
"""
