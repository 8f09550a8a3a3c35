"""`python -m otonom_trainer` runs the `otonom-train` command line."""

from otonom_trainer.cli import main

raise SystemExit(main())
