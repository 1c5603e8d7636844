"""Local infrastructure for the embedded default: an Apache Kafka broker (KRaft, single node)
fetched with Maven, and a milvus-lite server shared by processes."""
