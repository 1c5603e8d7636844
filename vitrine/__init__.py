"""Vitrine: near-real-time multimodal listing embeddings for marketplaces.

This package holds what every service shares: the exception root, settings, the CLI, and the
management of the local Kafka broker and milvus-lite server.
"""

__version__ = "0.1.0"
