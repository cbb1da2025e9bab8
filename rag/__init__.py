"""Multimodal retrieval and RAG over articles with pictures."""

__version__ = "0.1.0"
