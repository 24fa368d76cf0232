"""Custom layers used by task heads (CRF, label attention, thresholds)."""
