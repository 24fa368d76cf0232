"""Metrics: Keras metric classes and plain functions on numpy arrays."""
