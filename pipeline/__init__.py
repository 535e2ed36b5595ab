"""tfrollout: take a Keras model from a laptop to a verified TF Serving endpoint."""

__version__ = "0.1.0"
