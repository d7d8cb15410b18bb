"""The package version (``pyproject.toml``'s), in a module of its own so that any layer can
record it (``constcl extract`` writes it into ``extract.json``) without importing the package's
entry point, ``constcl/__init__.py``, which stands above every library package."""

__version__ = "0.1.0"
