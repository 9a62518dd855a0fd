//! The Hyper-V KVP pool the Azure host reads provisioning results from
//! (`/var/lib/hyperv/.kvp_pool_1`): fixed-size records of a 512-byte key and a 2048-byte
//! value, UTF-8, zero padded (azure-protocol.md). The host reads at most 1022 bytes of a
//! value, so a `PROVISIONING_REPORT` value is kept under that instead of being split.
//!
//! Checked against upstream (Azure/azure-init, `libazureinit/src/kvp.rs`, commit
//! 27adc475): `HV_KVP_EXCHANGE_MAX_KEY_SIZE` 512, `HV_KVP_EXCHANGE_MAX_VALUE_SIZE` 2048,
//! `HV_KVP_AZURE_MAX_VALUE_SIZE` 1022; `encode_kvp_item` zero-pads the key to 512 bytes and
//! each value slice of at most 1022 bytes to 2048; records are appended under an exclusive
//! `flock`. The value (`libazureinit/src/health.rs` `encoded_success_report`, `error.rs`
//! `as_encoded_report`) is `result=success|agent=…|pps_type=None|vm_id=…|timestamp=<RFC
//! 3339>`, or `result=error|reason=…|agent=…|…`, pipe-delimited CSV (a field is quoted only
//! when it holds `|`, `"` or a line break; ours never does, see [`provisioning_report`]).
//! We keep one NUL after the key (511 bytes at most), which a reader stopping at the first
//! NUL reads the same.

use anyhow::{Context, Result};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The pool the guest writes and the host reads.
pub const KVP_POOL: &str = "/var/lib/hyperv/.kvp_pool_1";
pub const KEY_SIZE: usize = 512;
pub const VALUE_SIZE: usize = 2048;
/// What the host reads of one value.
pub const HOST_VALUE_LIMIT: usize = 1022;
pub const PROVISIONING_REPORT_KEY: &str = "PROVISIONING_REPORT";

/// One record, zero padded. `value` must already fit [`HOST_VALUE_LIMIT`].
pub fn record(key: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0u8; KEY_SIZE + VALUE_SIZE];
    let key = key.as_bytes();
    let value = value.as_bytes();
    out[..key.len().min(KEY_SIZE - 1)].copy_from_slice(&key[..key.len().min(KEY_SIZE - 1)]);
    let n = value.len().min(HOST_VALUE_LIMIT);
    out[KEY_SIZE..KEY_SIZE + n].copy_from_slice(&value[..n]);
    out
}

/// The `PROVISIONING_REPORT` value: `result=success|…` or `result=error|reason=…|…`.
/// `|` separates fields and `"` would make it a quoted CSV field, so a reason carries
/// neither (nor a line break): the value is one unquoted record.
pub fn provisioning_report(error: Option<&str>, vm_id: &str, timestamp: &str) -> String {
    let agent = concat!("canarie-agent/", env!("CARGO_PKG_VERSION"));
    let tail = format!("agent={agent}|pps_type=None|vm_id={vm_id}|timestamp={timestamp}");
    match error {
        None => format!("result=success|{tail}"),
        Some(reason) => {
            let room = HOST_VALUE_LIMIT.saturating_sub(tail.len() + "result=error|reason=|".len());
            let mut reason: String = reason
                .chars()
                .map(|c| match c {
                    '|' => '/',
                    '"' => '\'',
                    '\n' | '\r' => ' ',
                    c => c,
                })
                .collect();
            while reason.len() > room {
                reason.pop();
            }
            format!("result=error|reason={reason}|{tail}")
        }
    }
}

/// Appends one record to the pool at `pool` under an exclusive lock (the host and other
/// writers share the file); the pool's directory must exist (Hyper-V's KVP daemon makes it).
pub fn append(pool: &Path, key: &str, value: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(pool)
        .with_context(|| format!("opening the KVP pool {}", pool.display()))?;
    let lock = nix::fcntl::Flock::lock(
        file.try_clone()
            .context("duplicating the KVP pool handle")?,
        nix::fcntl::FlockArg::LockExclusive,
    )
    .map_err(|(_, e)| e)
    .with_context(|| format!("locking the KVP pool {}", pool.display()))?;
    file.write_all(&record(key, value))
        .and_then(|()| file.sync_data())
        .with_context(|| format!("writing to the KVP pool {}", pool.display()))?;
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_fixed_layout() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join(".kvp_pool_1");
        let value = provisioning_report(
            Some(&format!("a|b \"c\"\n{}", "x".repeat(3000))),
            "vm-1",
            "2026-01-01T00:00:00Z",
        );
        assert!(value.len() <= HOST_VALUE_LIMIT);
        assert!(
            value.starts_with("result=error|reason=a/b 'c' x"),
            "{value}"
        );
        assert!(value.ends_with("|vm_id=vm-1|timestamp=2026-01-01T00:00:00Z"));
        append(&pool, PROVISIONING_REPORT_KEY, &value).unwrap();
        append(
            &pool,
            PROVISIONING_REPORT_KEY,
            &provisioning_report(None, "vm-1", "t"),
        )
        .unwrap();
        let bytes = std::fs::read(&pool).unwrap();
        assert_eq!(bytes.len(), 2 * (KEY_SIZE + VALUE_SIZE));
        let second = &bytes[KEY_SIZE + VALUE_SIZE..];
        assert_eq!(
            &second[..PROVISIONING_REPORT_KEY.len()],
            PROVISIONING_REPORT_KEY.as_bytes()
        );
        assert_eq!(second[PROVISIONING_REPORT_KEY.len()], 0);
        let v = &second[KEY_SIZE..];
        let end = v.iter().position(|b| *b == 0).unwrap();
        assert!(std::str::from_utf8(&v[..end])
            .unwrap()
            .starts_with("result=success|agent=canarie-agent/"));
    }
}
