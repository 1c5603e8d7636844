"""Vitrine's foundation: what every service shares.

The exception root, settings, Kafka client configuration, topics, the Milvus client factory,
metrics helpers and the management of the local Kafka broker and Milvus server. It imports no
service package (``streams``, ``recall``, ``encoders``) and nothing from ``app``.
"""

__version__ = "0.1.0"
