"""``python -m otonom_runtime``: the ``otonom`` command line."""

from otonom_runtime.cli import main

raise SystemExit(main())
