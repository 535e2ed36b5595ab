"""Command groups mounted on the `tfrollout` CLI: each module exposes `register(app)`."""
