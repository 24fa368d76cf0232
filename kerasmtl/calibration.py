"""Decision-threshold calibration of multi-label tasks on validation data:
`calibrate_thresholds` (the code is in `kerasmtl.tasks.calibration`, with the
multi-label task it belongs to)."""

from kerasmtl.tasks.calibration import STRATEGIES, calibrate_thresholds

__all__ = ["STRATEGIES", "calibrate_thresholds"]
