"""Real Linux under QEMU: Debian kernels and busybox initramfs images (see images.py)."""
