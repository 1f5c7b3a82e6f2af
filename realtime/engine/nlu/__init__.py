"""Intent recognition: language identification, entity extraction, intent classification.

Everything runs offline from what ships in the installed packages: py3langid's model for
language identification and wordllama's static embeddings (256 dimensions) for the
classifier's sentence features; nothing is downloaded at run time.
"""
