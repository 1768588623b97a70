"""vtpm-cuse: a virtual TPM 2.0 behind a CUSE character device and swtpm-compatible sockets."""
