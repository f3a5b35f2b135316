"""Operator CLI and local runtime for the image captioning pipeline (never shipped to Lambda)."""
