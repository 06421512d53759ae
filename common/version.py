"""The toolkit's version, shown in reports, artifact metadata and stage keys."""

__version__ = "0.1.0"
