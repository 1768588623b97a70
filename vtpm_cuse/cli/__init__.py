"""Command-line entry points: the daemon (vtpm-cuse) and the control tool (vtpm-ioctl)."""
