"""The recall fixtures (a filled collection, topics, a worker thread) serve the explorer too."""

from tests.recall.conftest import catalog, recall_env, worker  # noqa: F401  (fixtures)
