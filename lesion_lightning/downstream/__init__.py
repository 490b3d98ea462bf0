"""Do the generated lesions help? Classifiers trained on real, real + generated and generated-only
lesions, all tested on the same real test images (the `python -m lesion_lightning.utility` stage's library).

Arms, each trained for the same number of steps, for every seed:

1. ``real``: the real train split of the VQ-VAE's data (same split, normalisation, augmentation);
2. ``real_plus_synthetic``: the same plus class-conditional samples, by default topping every class
   up to the largest one (``synthetic_per_class=auto``) or N per class;
3. ``synthetic_only``: samples only, as many per class as the real train split has
   (``synthetic_only_per_class=match``) or N per class: "classification accuracy score", train on
   generated, test on real (Ravuri & Vinyals 2019).

Samples come from ``samples_dir`` (labels read from its samples.json) and, where it holds too few of a
class, from the prior through ``lesion_lightning.samples`` (the cached sampler) into
``<out>/generated/<class>/``. The arm-(1) classifiers are saved as ``<out>/classifiers/real_seed<k>.ckpt``
(load with :func:`lesion_lightning.modules.checkpoints.load_classifier`) and also score every
generated sample: class fidelity. Every finished (arm, seed) run is cached in ``<out>/runs/`` so an
interrupted stage resumes where it stopped.

plan.py      how many samples per class each arm gets
samples.py   labelled samples: samples_dir's first, the shortfall generated (and reused when unchanged)
stage.py     run_utility: validate, plan, build the arms' data, train (cached per arm and seed), compare
results.py   flat metrics, and logging them with the table and plot
"""
