"""Embedding models (the only package that imports torch and transformers, and only on load).

`rag.models.embeddings` re-exports the public names; see its docstring for the module map.
"""
