"""The model side of the pipeline: source model, target data, transfer, export (TensorFlow lives here)."""
