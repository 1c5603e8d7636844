"""Re-embedding the catalogue with a new model without downtime: ``vitrine rollout``.

A candidate collection is filled by a job that follows the catalogue's state topic
(``listings.state``) from its start — the bulk part up to the end it had when the rollout
started, then the delta as the live embedder writes new versions — until the live pointer moves
to it (``cutover``). See docs/operations.md, "Model rollout".
"""
