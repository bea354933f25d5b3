"""ktrdr worker fleet: configuration, worker runtime and backend.

Importing ``ktrdr`` only defines things: no settings are read, no sockets opened.
"""

from ktrdr.errors import ConfigurationError, KtrdrError

__all__ = ["ConfigurationError", "KtrdrError", "__version__"]

__version__ = "0.4.0"
