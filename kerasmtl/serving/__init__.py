"""Serving exported SavedModels over TF Serving's REST API."""
