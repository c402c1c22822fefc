"""The baselines under Lightning (issue 11): their data modules and training recipes, run by
``tools/train.py fit --config configs/baselines/<name>.yaml``. Their numeric core, the INR fitting
engine and the weight store, is :mod:`arc.baselines` (Lightning-free, like ARC's :mod:`arc.field`).

- :mod:`.weights_data` — ``WeightDataModule``: standardised fitted-INR weight vectors of ARC's splits;
- :mod:`.weight_mlp` — an MLP on them; :mod:`.boosting` — XGBoost on them;
- :mod:`.pixels` — the pixel CNN reference on ARC's image splits.
"""
