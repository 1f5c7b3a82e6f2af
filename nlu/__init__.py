"""Intent recognition: language identification, entity extraction, intent classification,
and the store of intent-model versions that the API's training and the retraining job
both record through (models.py).

Everything runs offline from what ships in the installed packages: py3langid's model for
language identification and wordllama's static embeddings (256 dimensions) for the
classifier's sentence features; nothing is downloaded at run time. scikit-learn is loaded
only to fit a model, never to serve one.
"""
