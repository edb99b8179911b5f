"""Base layer: atomic file writes, image conversion, the hub cache and the package's error base class."""
