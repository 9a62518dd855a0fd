//! sshd for a node provisioned without cloud-init: key login only (a drop-in that turns
//! password and keyboard-interactive login off), and the service told about what the
//! provisioning changed (reloaded for a new drop-in, started once host keys exist).
//!
//! The admin's password is always locked (IMDS never carries it), so turning password
//! login off loses nothing; it closes sshd to password guessing against other accounts.

use crate::paths::Root;
use anyhow::{Context, Result};
use std::time::Duration;

/// sshd reads `/etc/ssh/sshd_config.d/*.conf` in name order where its main file includes
/// them (Debian 12 does, at the top) and keeps the first value it reads for a keyword, so
/// this drop-in wins over the main file and over later drop-ins.
pub const DROPIN: &str = "/etc/ssh/sshd_config.d/50-canarie-agent.conf";
pub const DROPIN_MODE: u32 = 0o644;
pub const DROPIN_CONTENTS: &str =
    "# Written by canarie-agent (Azure disablePasswordAuthentication): key login only.\n\
PasswordAuthentication no\n\
KbdInteractiveAuthentication no\n";
/// Debian's name for sshd's unit (`sshd.service` is its alias).
pub const SERVICE: &str = "ssh.service";
/// How long a reload or start of sshd may take before the step warns.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// sshd's configuration as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Config {
    /// The drop-in is in place (true) or not yet (false).
    DropIn(bool),
    /// sshd is not installed: nothing to configure (the host keys' note says so).
    NoSshd,
    /// Why the drop-in would not be read: it is not written.
    NotIncluded(String),
}

pub fn observe(root: &Root) -> Result<Config> {
    let main = root.join("/etc/ssh/sshd_config");
    let text = match std::fs::read_to_string(&main) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::NoSshd),
        Err(e) => return Err(e).with_context(|| format!("reading {}", main.display())),
    };
    if !includes_dropins(&text) {
        return Ok(Config::NotIncluded(
            "/etc/ssh/sshd_config does not include /etc/ssh/sshd_config.d/*.conf: \
             password login left as sshd_config sets it"
                .into(),
        ));
    }
    Ok(Config::DropIn(crate::fsutil::is_current(
        &root.join(DROPIN),
        DROPIN_CONTENTS.as_bytes(),
        DROPIN_MODE,
    )?))
}

/// An `Include` line (keywords are case-insensitive) naming sshd_config.d.
pub fn includes_dropins(sshd_config: &str) -> bool {
    sshd_config.lines().any(|line| {
        let mut words = line.split_whitespace();
        words
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case("include"))
            && words.any(|w| w.contains("/etc/ssh/sshd_config.d/"))
    })
}

/// `disablePasswordAuthentication` as IMDS gives it ("true"/"false"); anything but
/// "false" is key login only, the safe side.
pub fn password_login_requested(disable_password_authentication: &str) -> bool {
    disable_password_authentication.eq_ignore_ascii_case("false")
}

/// Tells a running node's sshd what the provisioning changed: a reload when the drop-in
/// changed and sshd runs; a start (after `reset-failed`) when host keys were made and sshd
/// is enabled but not running (it failed without them, or gave up restarting). Returns
/// what was done, one line each.
pub async fn tell_service(
    bus: Option<&str>,
    config_changed: bool,
    keys_made: bool,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !config_changed && !keys_made {
        return Ok(done);
    }
    let systemd = crate::systemd::Systemd::connect(bus).await?;
    let state = systemd.unit_state(SERVICE).await?;
    if state.load_state != "loaded" {
        return Ok(done);
    }
    if state.is_active() {
        if config_changed {
            systemd.reload_and_wait(SERVICE, JOB_TIMEOUT).await?;
            done.push(format!("reloaded {SERVICE} (new {DROPIN})"));
        }
    } else if keys_made && systemd.unit_file_state(SERVICE).await? == "enabled" {
        systemd.reset_failed(SERVICE).await?;
        systemd.start_and_wait(SERVICE, JOB_TIMEOUT).await?;
        done.push(format!(
            "started {SERVICE} (enabled, {state} before the host keys existed)"
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_is_written_only_where_sshd_reads_it() {
        // Debian 12's sshd_config, first lines.
        assert!(includes_dropins(
            "# comment\n\nInclude /etc/ssh/sshd_config.d/*.conf\n\n#Port 22\n"
        ));
        assert!(includes_dropins(
            "include   /etc/ssh/sshd_config.d/*.conf\n"
        ));
        assert!(!includes_dropins(
            "#Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n"
        ));
        assert!(!includes_dropins("Include /etc/ssh/other/*.conf\n"));
        assert!(DROPIN_CONTENTS.contains("\nPasswordAuthentication no\n"));
        assert!(DROPIN_CONTENTS.ends_with("\nKbdInteractiveAuthentication no\n"));
        assert!(DROPIN.starts_with("/etc/ssh/sshd_config.d/") && DROPIN.ends_with(".conf"));
    }

    #[test]
    fn only_an_explicit_false_asks_for_password_login() {
        assert!(password_login_requested("false"));
        assert!(password_login_requested("False"));
        for v in ["true", "True", "", "no"] {
            assert!(!password_login_requested(v), "{v:?}");
        }
    }
}
