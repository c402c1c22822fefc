"""Train and evaluate arc models: ``python tools/train.py fit --config configs/demo.yaml``.

Subcommands: fit, validate, test, predict (LightningCLI). See README.md.
"""
from arc.cli import main

if __name__ == "__main__":
    main()
