"""The project's helpers, grouped by what they serve: files/ (weights, snapshots), training/,
evaluation/; process settings (utils/runtime.py) apply on first import of any of them."""
import utils.runtime  # noqa: F401
