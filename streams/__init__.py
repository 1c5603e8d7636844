"""The streaming embedder: listing events -> image and title embeddings -> Milvus rows.

Entry point: ``vitrine embedder`` (:mod:`streams.cli`); how it works: docs/embedder.md.
"""
