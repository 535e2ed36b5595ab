"""Protobuf modules generated from serving/client/protos (do not edit by hand)."""
