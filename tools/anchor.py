"""Fit a dataset's clouds once (pretrain the decoder if needed, then anchor every split).

    python tools/anchor.py --config configs/mnist.yaml [--data.source npz:PATH ...]

Reads the same config as ``tools/train.py`` (only ``data`` matters) and prints the store
directory, which later classifier runs reuse because its path is keyed by the settings.
"""
from arc.cli import anchor_main

if __name__ == "__main__":
    anchor_main()
