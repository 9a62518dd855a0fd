//! Man pages and shell completions for canarie-agent, generated from its clap definition
//! so they can never disagree with `--help`.

use anyhow::{Context, Result};
use canarie_agent::cli::Cli;
use canarie_agent::fsutil::write_if_changed;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;
use std::path::{Path, PathBuf};

/// The binary's name as installed (and as the completions complete it).
pub const BIN: &str = "canarie-agent";
/// The `manual` field of every page's title line.
const MANUAL: &str = "canarie-agent manual";

/// Where each generated file goes under a staging root.
#[derive(Debug, Clone)]
pub struct Layout {
    pub man1: PathBuf,
    pub bash: PathBuf,
    pub zsh: PathBuf,
    pub fish: PathBuf,
    /// The unit's `EnvironmentFile=` (a conffile, every variable commented out).
    pub environment: PathBuf,
}

impl Layout {
    /// Debian's directories (the ones bash-completion, zsh and fish search by default).
    pub fn debian(root: impl AsRef<Path>) -> Layout {
        let share = root.as_ref().join("usr/share");
        Layout {
            man1: share.join("man/man1"),
            bash: share.join("bash-completion/completions").join(BIN),
            zsh: share.join("zsh/vendor-completions").join(format!("_{BIN}")),
            fish: share
                .join("fish/vendor_completions.d")
                .join(format!("{BIN}.fish")),
            environment: root.as_ref().join("etc/canarie-agent/environment"),
        }
    }
}

/// Writes every man page (one per command, `canarie-agent-disk-inspect.1` style, as git
/// does), the bash, zsh and fish completions and the environment file. `date`
/// (YYYY-MM-DD) goes on the pages' title line. Returns the written paths.
pub fn generate(layout: &Layout, date: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    // `help` as a subcommand only duplicates --help; it gets neither a page nor completion.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    for (name, page) in man_pages(&cmd, date)? {
        let path = layout.man1.join(name);
        write(&path, &page)?;
        written.push(path);
    }
    for (shell, path) in [
        (Shell::Bash, &layout.bash),
        (Shell::Zsh, &layout.zsh),
        (Shell::Fish, &layout.fish),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), BIN, &mut buf);
        write(path, &buf)?;
        written.push(path.clone());
    }
    write(&layout.environment, environment_file(&cmd).as_bytes())?;
    written.push(layout.environment.clone());
    Ok(written)
}

/// The unit's environment file: every flag that has an environment variable, with its
/// help and default, commented out, so the file documents itself and changes nothing
/// until a line is uncommented.
pub fn environment_file(cmd: &clap::Command) -> String {
    let mut out = String::from(
        "# Environment of canarie-agent.service (EnvironmentFile=). Every variable is a global\n\
         # flag of canarie-agent (see canarie-agent(1)); uncomment a line to override the\n\
         # default. Nothing here is needed on an Azure node. After a change:\n\
         #   systemctl restart canarie-agent\n",
    );
    for arg in cmd.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let default = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy())
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for line in help.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!("#{}={default}\n", env.to_string_lossy()));
    }
    // Not a flag, so clap does not know it: the log filter read in commands/logging.rs.
    out.push_str(
        "\n# Log filter (tracing EnvFilter syntax), e.g. debug or canarie_agent::disk=debug\n\
         #CANARIE_LOG=info\n",
    );
    out
}

/// Every page as (file name, roff), the top-level page first.
pub fn man_pages(cmd: &clap::Command, date: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut pages = Vec::new();
    let mut top = render(cmd, date)?;
    top.extend_from_slice(top_level_sections().render().as_bytes());
    pages.push((format!("{BIN}.1"), top));
    collect_subcommand_pages(cmd, date, &mut pages)?;
    Ok(pages)
}

fn collect_subcommand_pages(
    cmd: &clap::Command,
    date: Option<&str>,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or_else(|| sub.get_name());
        let mut page = render(sub, date)?;
        let mut see_also = Roff::new();
        see_also.control("SH", ["SEE ALSO"]);
        see_also.text([bold(BIN), roman("(1)")]);
        page.extend_from_slice(see_also.render().as_bytes());
        pages.push((format!("{name}.1"), page));
        collect_subcommand_pages(sub, date, pages)?;
    }
    Ok(())
}

fn render(cmd: &clap::Command, date: Option<&str>) -> Result<Vec<u8>> {
    let mut man = Man::new(cmd.clone()).manual(MANUAL);
    if let Some(date) = date {
        man = man.date(date);
    }
    let mut buf = Vec::new();
    man.render(&mut buf)
        .with_context(|| format!("rendering the man page of {}", cmd.get_name()))?;
    Ok(buf)
}

/// FILES and SEE ALSO of the top-level page: what the package installs and what the agent
/// writes, which `--help` has no place for.
fn top_level_sections() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    let files: [(&str, &str); 6] = [
        (
            "/lib/systemd/system/canarie-agent.service",
            "The unit that runs canarie-agent bootstrap on every boot (enabled by the package).",
        ),
        (
            canarie_agent::provision::HOST_KEYS_UNIT,
            "Makes missing SSH host keys (ssh-keygen -A) before sshd starts (enabled by the package).",
        ),
        (
            "/etc/canarie-agent/environment",
            "CANARIE_* variables for the unit (endpoints, a local node config, deadlines); all commented out by default.",
        ),
        (
            "/var/lib/canarie-agent/",
            "The agent's node state: the last run, the last converged config, the data-disk format marker. Removed when the package is purged.",
        ),
        (
            "/etc/rancher/rke2/config.yaml, /etc/rancher/rke2/config.yaml.d/",
            "RKE2's config and the join-token drop-in (mode 0600), written by bootstrap.",
        ),
        (
            "/var/lib/rancher/rke2/server/manifests/",
            "Manifests seeded on servers, applied by RKE2's helm-controller.",
        ),
    ];
    for (path, what) in files {
        r.control("TP", []);
        r.text([italic(path)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1) ("),
        italic("journalctl -u canarie-agent"),
        roman(" tells the story of a boot), "),
        bold("systemd.service"),
        roman("(5)"),
    ]);
    r
}

fn write(path: &Path, contents: &[u8]) -> Result<()> {
    write_if_changed(path, contents, 0o644)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
