//! Build tool for the Debian package: writes canarie-agent's man pages and shell
//! completions, generated from the CLI definition (`canarie_agent::cli::Cli`), into a
//! staging root laid out like the installed system. It is a separate binary so the shipped
//! CLI carries no packaging subcommand.
//!
//! Usage: `canarie-packaging-gen STAGING_ROOT`. The man pages' date comes from
//! `SOURCE_DATE_EPOCH` (build.sh sets it from the Debian changelog) so that two builds of
//! the same version produce the same files.

use anyhow::{bail, Context, Result};
use canarie_packaging_gen::{generate, Layout};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

fn main() {
    if let Err(e) = run() {
        eprintln!("canarie-packaging-gen: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(root), None) = (args.next(), args.next()) else {
        bail!("usage: canarie-packaging-gen STAGING_ROOT (one directory; created when missing)");
    };
    let date = man_date()?;
    let written = generate(&Layout::debian(PathBuf::from(root)), date.as_deref())?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// The man page date (YYYY-MM-DD) from `SOURCE_DATE_EPOCH`, or none without it.
fn man_date() -> Result<Option<String>> {
    let Some(raw) = std::env::var_os("SOURCE_DATE_EPOCH") else {
        return Ok(None);
    };
    let raw = raw.to_string_lossy();
    let secs: u64 = raw.trim().parse().with_context(|| {
        format!("SOURCE_DATE_EPOCH={raw:?} is not a number of seconds since 1970; unset it or set it to one")
    })?;
    let when = UNIX_EPOCH + Duration::from_secs(secs);
    let stamp = humantime::format_rfc3339_seconds(when).to_string();
    Ok(Some(stamp[..10].to_owned()))
}
