//! Checks of the files the agent writes for RKE2: the join token drop-in (mode, owner, a
//! token in it), config.yaml and its companions against what this binary renders for the
//! current config, and the seeded server manifests byte for byte.

use super::{Budget, Options, Outcome, JOIN_TOKEN_FILE, RKE2_CONFIG, RKE2_MANIFESTS};
use crate::config::{NodeConfig, Role};
use crate::doctor::Check;
use crate::nodefile::RenderedFile;
use crate::paths::{Root, RKE2_CONFIG as RKE2_CONFIG_PATH, RKE2_MANIFESTS_DIR, RKE2_TOKEN_DROPIN};
use crate::rke2::{self, NodeFacts};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const RESTART_HINT: &str = "`systemctl restart canarie-agent` rewrites it";

pub(super) async fn checks(opts: &Options, budget: &Budget, config: &NodeConfig) -> Vec<Check> {
    if !opts.as_root {
        return vec![
            super::instant(
                &JOIN_TOKEN_FILE,
                Outcome::needs_root(&format!("reads {RKE2_TOKEN_DROPIN}")),
            ),
            super::instant(
                &RKE2_CONFIG,
                Outcome::needs_root("RKE2's config files are mode 0600"),
            ),
            super::instant(
                &RKE2_MANIFESTS,
                if config.role == Role::Server {
                    Outcome::needs_root("the manifests are mode 0600")
                } else {
                    not_a_server()
                },
            ),
        ];
    }
    let root = opts.cx.root.clone();
    let facts = NodeFacts {
        data_disk_mounted: super::disk::data_disk_mounted(&root, config),
    };
    let rendered = rke2::render_config_files(config, &facts)
        .and_then(|files| Ok((files, rke2::render_manifests(config)?)));
    let (files, manifests) = match rendered {
        Ok(both) => both,
        Err(e) => {
            let broken = Outcome::fail(
                format!("this agent cannot render the node's files: {e:#}"),
                "fix the node config (see check config)",
            );
            return vec![
                super::instant(&JOIN_TOKEN_FILE, token_file(&root)),
                super::instant(&RKE2_CONFIG, broken.clone()),
                super::instant(&RKE2_MANIFESTS, broken),
            ];
        }
    };
    let role = config.role;
    let (r1, r2) = (root.clone(), root.clone());
    let (token, config_files, manifests) = tokio::join!(
        budget.run(&JOIN_TOKEN_FILE, async {
            (blocking_outcome(move || token_file(&root)).await, ())
        }),
        budget.run(&RKE2_CONFIG, async {
            (
                blocking_outcome(move || rke2_config(&r1, role, &files)).await,
                (),
            )
        }),
        budget.run(&RKE2_MANIFESTS, async {
            let outcome = if role == Role::Server {
                blocking_outcome(move || server_manifests(&r2, &manifests)).await
            } else {
                not_a_server()
            };
            (outcome, ())
        }),
    );
    vec![token.0, config_files.0, manifests.0]
}

fn not_a_server() -> Outcome {
    Outcome::skipped("agents get no seeded manifests (role agent)")
}

async fn blocking_outcome(work: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
    super::blocking(work).await.unwrap_or_else(|e| {
        Outcome::fail(
            format!("{e:#}"),
            "a bug in doctor: report it with this output",
        )
    })
}

/// `join-token-file`: present, a regular file, mode 0600, owned by root, holding a token.
/// Its content is never shown, nor any parse error (which could quote it).
fn token_file(root: &Root) -> Outcome {
    let path = root.join(RKE2_TOKEN_DROPIN);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Outcome::fail(
                format!("{RKE2_TOKEN_DROPIN} is missing: RKE2 has no join token"),
                "canarie-agent writes it from Key Vault (see check key-vault): `systemctl restart canarie-agent`",
            )
        }
        Err(e) => {
            return Outcome::fail(
                format!("cannot read {RKE2_TOKEN_DROPIN}: {e}"),
                "check the file and its directory",
            )
        }
    };
    if !meta.file_type().is_file() {
        return Outcome::fail(
            format!("{RKE2_TOKEN_DROPIN} is not a regular file"),
            format!("remove it; {RESTART_HINT}"),
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode != 0o600 {
        return Outcome::fail(
            format!(
                "{RKE2_TOKEN_DROPIN} has mode {mode:04o}: the join token is readable by {}",
                if mode & 0o004 != 0 {
                    "every user on the node"
                } else {
                    "users other than root"
                }
            ),
            format!(
                "`chmod 600 {RKE2_TOKEN_DROPIN}` (or {RESTART_HINT} with mode 0600); rotate the token if untrusted users could read it"
            ),
        );
    }
    if meta.uid() != 0 {
        return Outcome::fail(
            format!(
                "{RKE2_TOKEN_DROPIN} is owned by uid {}, not root",
                meta.uid()
            ),
            format!("`chown root:root {RKE2_TOKEN_DROPIN}`"),
        );
    }
    let token_len = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_yaml_ng::from_slice::<serde_yaml_ng::Mapping>(&bytes).ok())
        .and_then(|m| m.get("token").and_then(|v| v.as_str()).map(str::len));
    match token_len {
        Some(len) if len > 0 => Outcome::ok(format!(
            "{RKE2_TOKEN_DROPIN}: mode 0600, owner root, holds a token of {len} characters"
        )),
        _ => Outcome::fail(
            format!("{RKE2_TOKEN_DROPIN} holds no `token:` value"),
            RESTART_HINT,
        ),
    }
}

/// `rke2-config`: config.yaml (and on servers the PSA config, on nodes with a data disk the
/// RKE2 unit's drop-in) as this binary renders them for the current config; config.yaml
/// carries only keys RKE2 accepts for the node's role.
fn rke2_config(root: &Root, role: Role, files: &[RenderedFile]) -> Outcome {
    let config_path = root.join(RKE2_CONFIG_PATH);
    let text = match std::fs::read(&config_path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Outcome::fail(
                format!(
                "{RKE2_CONFIG_PATH} is missing: the node was never bootstrapped or it was removed"
            ),
                "`systemctl restart canarie-agent` writes it; see check last-run",
            )
        }
        Err(e) => {
            return Outcome::fail(
                format!("cannot read {RKE2_CONFIG_PATH}: {e}"),
                "check the file",
            )
        }
    };
    let keys = match serde_yaml_ng::from_slice::<serde_yaml_ng::Mapping>(&text) {
        Ok(m) => m
            .keys()
            .map(|k| k.as_str().unwrap_or("(non-string key)").to_string())
            .collect::<Vec<_>>(),
        Err(e) => {
            return Outcome::fail(
                format!("{RKE2_CONFIG_PATH} is not a YAML mapping: {e}"),
                RESTART_HINT,
            )
        }
    };
    let allowed = match role {
        Role::Server => rke2::SERVER_KEYS,
        Role::Agent => rke2::AGENT_KEYS,
    };
    let foreign: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !foreign.is_empty() {
        return Outcome::fail(
            format!(
                "{RKE2_CONFIG_PATH} has keys that are not rke2-{} options this agent writes: {}",
                role.as_str(),
                foreign.join(", ")
            ),
            format!("RKE2 skips keys its {} subcommand does not know, and other keys are not ours: {RESTART_HINT} from the node config (put extra settings in the node config, not on the node)", role.as_str()),
        );
    }
    let mut missing = Vec::new();
    let mut differ = Vec::new();
    for f in files {
        match std::fs::read(root.join(&f.path)) {
            Ok(bytes) if bytes == f.contents => {}
            Ok(_) => differ.push(f.path.display().to_string()),
            Err(_) => missing.push(f.path.display().to_string()),
        }
    }
    if !missing.is_empty() {
        return Outcome::fail(
            format!("missing: {}", missing.join(", ")),
            "`systemctl restart canarie-agent` writes them; see check last-run",
        );
    }
    if !differ.is_empty() {
        return Outcome::warn(
            format!(
                "differ from what the node config renders: {} (edited by hand, or the config changed since)",
                differ.join(", ")
            ),
            "`canarie-agent plan` shows the change; `systemctl restart canarie-agent` rewrites them and restarts RKE2",
        );
    }
    Outcome::ok(format!(
        "{} as the node config renders them; keys valid for rke2-{}",
        names(files),
        role.as_str()
    ))
}

/// `rke2-manifests`: every manifest this binary seeds, byte for byte. RKE2's own manifests
/// in the same directory are not ours and are ignored.
fn server_manifests(root: &Root, manifests: &[RenderedFile]) -> Outcome {
    let mut missing = Vec::new();
    let mut differ = Vec::new();
    for f in manifests {
        match std::fs::read(root.join(&f.path)) {
            Ok(bytes) if bytes == f.contents => {}
            Ok(_) => differ.push(file_name(&f.path)),
            Err(_) => missing.push(file_name(&f.path)),
        }
    }
    if missing.is_empty() && differ.is_empty() {
        return Outcome::ok(format!(
            "{} manifests in {RKE2_MANIFESTS_DIR}, identical to this agent's",
            manifests.len()
        ));
    }
    if differ.is_empty() && missing.len() == manifests.len() {
        return Outcome::fail(
            format!(
                "none of the {} seeded manifests is in {RKE2_MANIFESTS_DIR}",
                manifests.len()
            ),
            "`systemctl restart canarie-agent` writes them; see check last-run",
        );
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing: {}", missing.join(", ")));
    }
    if !differ.is_empty() {
        parts.push(format!("differ from this agent's: {}", differ.join(", ")));
    }
    Outcome::fail(
        format!("{} of {} manifests: {}", missing.len() + differ.len(), manifests.len(), parts.join("; ")),
        "they were edited on the node, written by another agent version, or the node config changed since (see check config): `systemctl restart canarie-agent` rewrites them and helm-controller re-applies them; change values in helm-values/ or the node config, never on the node",
    )
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn names(files: &[RenderedFile]) -> String {
    files
        .iter()
        .map(|f| file_name(&f.path))
        .collect::<Vec<_>>()
        .join(", ")
}
