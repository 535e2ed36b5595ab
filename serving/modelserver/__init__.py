"""A TF Serving-compatible model server: same flags, config files, gRPC and REST APIs."""
