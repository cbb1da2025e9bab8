"""Retrieval quality: metrics, loaders for labelled question sets, and the runner behind `rag eval`."""
