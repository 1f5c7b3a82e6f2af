"""Review queues and intent-model retraining (pipelines/nlu.py)."""
