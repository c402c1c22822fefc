"""Render a stored cloud, and latent edits of it, back to images.

    python tools/reconstruct.py --store DIR --index 12 [--split test] \\
        --edit translate:dx=30,dy=0 --edit rotate:deg=45 --out edits.png \\
        [--scale 4] [--canvas H,W | --canvas pad=P] [--show-points] [--panels DIR] [--wandb] [--exact]

``--index`` is the image's source index in ``--split``. Edits apply cumulatively in the order
given; their syntax and the exact mode are described in :mod:`arc.edits`. The output PNG is a
grid: the original image (when the source can be reopened), the reconstruction with its PSNR,
then one panel per edit step. ``--panels DIR`` also writes every panel as its own PNG at the
rendered resolution. ``--wandb`` logs the grid and the panels to Weights & Biases (offline
unless credentials exist; it never prompts).

The decoder is the one named in the store manifest (or ``--decoder``); a decoder whose
content hash differs from the store's is refused. The original image is found by reopening
the source recorded in the manifest (``shapes``, ``digits``, ``torchvision:*`` under
``--data-root``); npz and imagefolder sources need ``--source npz:PATH`` / ``imagefolder:PATH``.
The reopened source must have the manifest's identity (same content hash), otherwise no
original panel is shown. A store of 1-D signals or 3-D volumes gives line plots per channel
(decoded over the original, latent positions as ticks) or rows of slices along the first axis
(:mod:`arc.viz_signals`); edits take D-dimensional parameters there (:mod:`arc.edits`), ``--canvas``
is 2-D only. The command and its
library live in :mod:`arc.reconstruct`.
"""
import sys

from arc.reconstruct import main

if __name__ == "__main__":
    sys.exit(main())
