"""Destinations: apply change batches and the stream's checkpoint in one transaction."""
