//! The two libblkid probes of the disk-safety spec, in-process.
//!
//! libblkid-rs 0.4 cannot set partition-probing flags and keeps its raw probe handle
//! private, yet both probes need `BLKID_PARTS_FORCE_GPT` (without it a GPT whose
//! protective MBR is gone, such as a lone backup header, is invisible). So this file
//! talks to libblkid through the `-sys` bindings behind a small owning wrapper.

use anyhow::{bail, Context, Result};
use libblkid_rs_sys as sys;
use std::ffi::{c_char, c_int, CStr};
use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;

/// One on-disk signature, as `wipefs --no-act` would list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// libblkid's name: `ext4`, `xfs`, `gpt`, `PMBR`, `dos`, `crypto_LUKS`, ...
    pub kind: String,
    /// `filesystem`, `raid`, `crypto`, `other`, or `partition-table`.
    pub usage: String,
    /// Byte offset of the magic on the device.
    pub offset: u64,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// The superblock was found only because the scan accepts bad checksums.
    pub bad_checksum: bool,
}

impl Signature {
    pub fn is_partition_table(&self) -> bool {
        self.usage == PARTITION_TABLE
    }
}

/// The usage wipefs gives partition tables (libblkid sets none for them).
pub const PARTITION_TABLE: &str = "partition-table";

/// What the safe probe (`blkid_do_safeprobe`) reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SafeProbe {
    /// Return 1: no superblock and no partition table.
    Nothing,
    /// Return 0: exactly one superblock and/or one partition table.
    Found(SafeValues),
    /// Return -2: more than one superblock; libblkid will not say which.
    Ambivalent,
    /// Any other negative return: the device could not be probed.
    Failed(i32),
}

/// The values the safe probe defines when it finds something.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SafeValues {
    pub fs_type: Option<String>,
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub usage: Option<String>,
    pub version: Option<String>,
    pub pt_type: Option<String>,
    /// Entries in the partition table, when there is one.
    pub partitions: Option<usize>,
}

/// The safe probe: superblocks with LABEL, UUID, TYPE, USAGE and VERSION, plus
/// partitions with FORCE_GPT. Every negative return is kept, never read as "blank".
pub fn safe_probe(device: &File) -> Result<SafeProbe> {
    let mut probe = Probe::new(device)?;
    probe.enable(
        sys::BLKID_SUBLKS_LABEL
            | sys::BLKID_SUBLKS_UUID
            | sys::BLKID_SUBLKS_TYPE
            | sys::BLKID_SUBLKS_USAGE
            | sys::BLKID_SUBLKS_VERSION,
        sys::BLKID_PARTS_FORCE_GPT,
    )?;
    // SAFETY: the probe handle is valid for the wrapper's lifetime.
    let rc = unsafe { sys::blkid_do_safeprobe(probe.raw) };
    Ok(match rc {
        0 => SafeProbe::Found(SafeValues {
            fs_type: probe.lookup("TYPE"),
            label: probe.lookup("LABEL"),
            uuid: probe.lookup("UUID"),
            usage: probe.lookup("USAGE"),
            version: probe.lookup("VERSION"),
            pt_type: probe.lookup("PTTYPE"),
            partitions: probe.partition_count(),
        }),
        1 => SafeProbe::Nothing,
        -2 => SafeProbe::Ambivalent,
        rc => SafeProbe::Failed(rc),
    })
}

/// Upper bound on signatures one scan may report; a real disk carries a handful.
const MAX_SIGNATURES: usize = 64;

/// The full signature scan, like `wipefs --no-act`: superblocks with MAGIC and BADCSUM,
/// partitions with MAGIC and FORCE_GPT. After each hit its magic is hidden and the
/// prober run again, so second copies (backup GPT, LUKS2 secondary header) and
/// overlapping formats all show up.
pub fn scan_signatures(device: &File) -> Result<Vec<Signature>> {
    let mut probe = Probe::new(device)?;
    probe.enable(
        sys::BLKID_SUBLKS_MAGIC
            | sys::BLKID_SUBLKS_BADCSUM
            | sys::BLKID_SUBLKS_TYPE
            | sys::BLKID_SUBLKS_USAGE
            | sys::BLKID_SUBLKS_LABEL
            | sys::BLKID_SUBLKS_UUID,
        sys::BLKID_PARTS_MAGIC | sys::BLKID_PARTS_FORCE_GPT,
    )?;
    let mut found = Vec::new();
    loop {
        // SAFETY: as above.
        let rc = unsafe { sys::blkid_do_probe(probe.raw) };
        match rc {
            0 => {}
            1 => return Ok(found),
            rc => bail!("libblkid's signature scan failed (blkid_do_probe returned {rc})"),
        }
        if found.len() == MAX_SIGNATURES {
            bail!("libblkid's signature scan reported more than {MAX_SIGNATURES} signatures");
        }
        let (kind, offset, magic_len, usage) = if let Some(kind) = probe.lookup("TYPE") {
            let usage = probe.lookup("USAGE").unwrap_or_else(|| "other".to_string());
            (
                kind,
                probe.lookup("SBMAGIC_OFFSET"),
                probe.value_len("SBMAGIC"),
                usage,
            )
        } else if let Some(kind) = probe.lookup("PTTYPE") {
            let usage = PARTITION_TABLE.to_string();
            (
                kind,
                probe.lookup("PTMAGIC_OFFSET"),
                probe.value_len("PTMAGIC"),
                usage,
            )
        } else {
            bail!("libblkid's signature scan matched something without a TYPE or PTTYPE");
        };
        let offset: u64 = offset
            .as_deref()
            .and_then(|o| o.parse().ok())
            .with_context(|| format!("libblkid found {kind} but no magic offset for it"))?;
        let magic_len = magic_len
            .filter(|len| *len > 0)
            .with_context(|| format!("libblkid found {kind} but no magic for it"))?;
        found.push(Signature {
            kind,
            usage,
            offset,
            label: probe.lookup("LABEL"),
            uuid: probe.lookup("UUID").or_else(|| probe.lookup("PTUUID")),
            bad_checksum: probe.lookup("SBBADCSUM").as_deref() == Some("1"),
        });
        // Hide this magic and re-run the same prober: the next call then reports the
        // next copy or the next format, exactly as wipefs does.
        // SAFETY: as above.
        let hidden = unsafe { sys::blkid_probe_hide_range(probe.raw, offset, magic_len as u64) };
        if hidden != 0 {
            bail!("libblkid could not hide the magic at offset {offset} to look further");
        }
        // SAFETY: as above.
        let stepped = unsafe { sys::blkid_probe_step_back(probe.raw) };
        if stepped != 0 {
            bail!("libblkid could not step back to look for more signatures");
        }
    }
}

/// An owned libblkid probe over a borrowed open device.
struct Probe<'a> {
    raw: sys::blkid_probe,
    _device: PhantomData<&'a File>,
}

impl<'a> Probe<'a> {
    fn new(device: &'a File) -> Result<Self> {
        // SAFETY: plain constructor; a null return means allocation failed.
        let raw = unsafe { sys::blkid_new_probe() };
        if raw.is_null() {
            bail!("libblkid could not allocate a probe");
        }
        let probe = Probe {
            raw,
            _device: PhantomData,
        };
        // Offset 0 and size 0 mean the whole device. The fd stays ours: libblkid does
        // not close a descriptor it was handed, and the borrow keeps it open.
        // SAFETY: valid probe and an fd that outlives it (lifetime 'a).
        let rc = unsafe { sys::blkid_probe_set_device(probe.raw, device.as_raw_fd(), 0, 0) };
        if rc != 0 {
            bail!("libblkid could not attach to the device (blkid_probe_set_device returned {rc})");
        }
        Ok(probe)
    }

    fn enable(&mut self, superblock_flags: u32, partition_flags: u32) -> Result<()> {
        // SAFETY: valid probe; the flags are libblkid's own constants.
        let rcs = unsafe {
            [
                sys::blkid_probe_enable_superblocks(self.raw, 1),
                sys::blkid_probe_set_superblocks_flags(self.raw, superblock_flags as c_int),
                sys::blkid_probe_enable_partitions(self.raw, 1),
                sys::blkid_probe_set_partitions_flags(self.raw, partition_flags as c_int),
            ]
        };
        if rcs.iter().any(|rc| *rc != 0) {
            bail!("libblkid rejected the probing flags ({rcs:?})");
        }
        Ok(())
    }

    /// A value the last probe defined, as text (libblkid NUL-terminates text values).
    fn lookup(&self, name: &str) -> Option<String> {
        let (data, len) = self.raw_value(name)?;
        let bytes = &data[..len];
        let text = CStr::from_bytes_until_nul(bytes)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned());
        (!text.is_empty()).then_some(text)
    }

    /// The length of a (binary) value the last probe defined.
    fn value_len(&self, name: &str) -> Option<usize> {
        self.raw_value(name).map(|(_, len)| len)
    }

    fn raw_value(&self, name: &str) -> Option<(&[u8], usize)> {
        let name = std::ffi::CString::new(name).ok()?;
        let mut data: *const c_char = std::ptr::null();
        let mut len: usize = 0;
        // SAFETY: valid probe, NUL-terminated name, out-pointers to locals. The returned
        // buffer belongs to the probe and lives until the next probing call, which the
        // borrow of `self` outlasts.
        let rc =
            unsafe { sys::blkid_probe_lookup_value(self.raw, name.as_ptr(), &mut data, &mut len) };
        if rc != 0 || data.is_null() {
            return None;
        }
        // SAFETY: libblkid promises `len` readable bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        Some((bytes, len))
    }

    /// Entries of the partition table the last safe probe found, if any.
    fn partition_count(&mut self) -> Option<usize> {
        // SAFETY: valid probe; the list belongs to the probe.
        let list = unsafe { sys::blkid_probe_get_partitions(self.raw) };
        if list.is_null() {
            return None;
        }
        // SAFETY: a non-null list from the same probe.
        let n = unsafe { sys::blkid_partlist_numof_partitions(list) };
        usize::try_from(n).ok()
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from blkid_new_probe and is freed once.
        unsafe { sys::blkid_free_probe(self.raw) }
    }
}
