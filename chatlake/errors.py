"""Errors a user can cause and fix; the CLI prints them without a traceback."""


class ChatlakeError(Exception):
    """A failure the user can act on: shown as a one-line message, never a traceback."""


class ConfigError(ChatlakeError):
    """Configuration is missing or invalid."""


class ServicesNotRunning(ChatlakeError):
    """The embedded stores are not running under this CHATLAKE_HOME."""


class NotFound(ChatlakeError):
    """A named resource does not exist (or belongs to another tenant)."""
