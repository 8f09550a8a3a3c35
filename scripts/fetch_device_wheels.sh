#!/usr/bin/env bash
# The wheels bench/gpu_check.sh installs on a GPU machine that reaches no package registry:
# what the three packages need beyond that machine's image (SQLAlchemy and greenlet; hatchling,
# trove-classifiers and tomlkit to build them with pip's --no-build-isolation, editables for the
# editable install), plus backtesting and what it needs beyond the image (bokeh, tornado,
# xyzservices: packages/runtime/tests/test_metrics.py cross-checks against it). CPython 3.12
# x86-64 wheels (the image's interpreter), into wheels/ (ignored by git; carry it to the
# machine). Run here, where pip reaches PyPI:
#
#     bash scripts/fetch_device_wheels.sh [FOLDER]      # default: wheels/
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-wheels}"
python="${PYTHON:-python3}"
mkdir -p "$dest"
# --no-deps: the image has the rest (numpy, typing-extensions, packaging, pathspec, pluggy,
# jinja2, pillow, contourpy, narwhals, pandas); pip matches each platform tag exactly
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$dest" \
  "sqlalchemy==2.1.9" greenlet hatchling trove-classifiers tomlkit editables \
  "backtesting==0.6.6" "bokeh==3.9.2" "tornado==6.6.1" "xyzservices==2026.9.1"
ls -1 "$dest"
du -sh "$dest"
