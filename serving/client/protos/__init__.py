"""Source `.proto` files for the light client's wire messages (see generate.py)."""
