"""vtpm-cuse: a virtual TPM 2.0 behind a CUSE character device and swtpm-compatible sockets."""

__version__ = "0.1.0"
"""The one version string every ``--version`` and ``--print-capabilities`` reports.
pyproject.toml reads the package version from here."""
