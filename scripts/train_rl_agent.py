#!/usr/bin/env python3
"""The guide's training command, kept as a thin alias of ``otonom-train train``.

    python scripts/train_rl_agent.py --dataset data/offline_dataset.npz --output models/rl_bc \
        --epochs 20 --batch-size 256 --lr 0.001

takes exactly the flags of ``otonom-train train`` (``--help`` lists them).
"""

import sys

from otonom_trainer.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
