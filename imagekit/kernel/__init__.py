"""Kernels: read bzImages (boot header, payload, decompression), check configs for EC2 targets."""
