"""chatlake: the code shared by every part of the platform.

Settings, the embedded-store supervisor, the PostgreSQL schema and its migrations,
the control-plane operations (tenants, API keys, audit) and the `chatlake` CLI live here;
the realtime API, the lake, the pipelines and the compliance jobs build on them.
"""

__version__ = "0.1.0"
