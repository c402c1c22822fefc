"""Weight-space baselines (numeric core, no Lightning): per-sample INRs fitted in batches and their weight store.

- :mod:`arc.baselines.inr` — INR architectures (SIREN, ReLU MLP, Fourier-feature MLP) as weight
  stacks, their init, batched forward and hand-written gradient;
- :mod:`arc.baselines.fitting` — :func:`fit_inrs`, the batched per-sample fitting engine;
- :mod:`arc.baselines.reference` — the plain batched-autograd loop it is checked and timed against;
- :mod:`arc.baselines.weight_store` — fitted weight vectors in sharded safetensors files.

The classifiers that read them (Lightning) are :mod:`arc.baseline_training`.
"""
from arc.baselines.fitting import INITS, INRFitConfig, INRFitResult, fit_inrs, fit_stack
from arc.baselines.inr import KINDS, Grid, INRConfig, INRError, WeightStack, encode, init_stack, pixel_coordinates, sample_coordinates

__all__ = [
    "INITS",
    "Grid",
    "INRConfig",
    "INRError",
    "INRFitConfig",
    "INRFitResult",
    "KINDS",
    "WeightStack",
    "encode",
    "fit_inrs",
    "fit_stack",
    "init_stack",
    "pixel_coordinates",
    "sample_coordinates",
]
