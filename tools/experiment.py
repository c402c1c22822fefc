"""Run a grid of training runs and tabulate them: ``python tools/experiment.py configs/experiments/demo_grid.yaml``.

Options: --out DIR, --parallel N, --executor local|submitit-local|slurm, --slurm-* (see --help,
docs/architecture.md "Experiment grids").
"""
import sys

from arc.experiments.main import main

if __name__ == "__main__":
    sys.exit(main())
