"""Tests for serving.client, its wire contract and the verify stage."""
