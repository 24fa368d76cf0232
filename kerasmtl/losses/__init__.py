"""Losses: plain functions plus `keras.losses.Loss` wrappers."""
