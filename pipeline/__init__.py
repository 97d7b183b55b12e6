"""digit-reader: read handwritten numbers off scanned forms and cheques."""

__version__ = "0.1.0"
