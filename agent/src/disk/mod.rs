//! The Longhorn data disk: find it by LUN, probe it with libblkid, format only a blank
//! disk, mount it for good. See docs/disk-safety.md.
