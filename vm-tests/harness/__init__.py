"""The vm-tests harness: boots the project's .deb in QEMU guests against azure-sim."""
