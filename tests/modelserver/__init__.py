"""Tests for the TF Serving-compatible model server (serving/modelserver)."""
