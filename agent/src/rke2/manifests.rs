//! The manifests seeded into RKE2's server manifests directory.
//!
//! Each value lives in one file: `manifests/seed/<file>` holds the object (chart, version,
//! namespace, policy), `helm-values/<chart>.yaml` holds the chart values, and the node config
//! holds what differs per cluster. All three meet here: the seed is parsed, its
//! `spec.valuesContent` becomes the values file's text unchanged, and per-cluster values go in
//! through a HelmChart's `spec.set` (strings), a HelmChartConfig's `spec.values` (it has no
//! `set`; helm-controller gives `values` precedence over `valuesContent`) or the GitRepo's
//! fields. A seed that already defines a field filled here is refused, so no value can end up
//! in two places.

use super::{yaml, MANIFEST_MODE};
use crate::config::{GitRepoConfig, NodeConfig};
use crate::nodefile::{Effect, RenderedFile};
use crate::paths::RKE2_MANIFESTS_DIR;
use anyhow::{bail, Context, Result};
use serde_yaml_ng::{Mapping, Value};
use std::path::Path;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/fleet_bundle_paths.rs"));
}

/// The GitRepo's `spec.paths`: every `manifests/bundles/<dir>` holding a fleet.yaml, found
/// by build.rs when the agent was built.
pub const FLEET_BUNDLE_PATHS: &[&str] = generated::FLEET_BUNDLE_PATHS;

/// One seeded object: its source, its values file, and its per-cluster values.
struct Seed {
    /// Both the source's name under manifests/seed/ and the file name on the node (RKE2
    /// names the AddOn after it).
    file: &'static str,
    source: &'static str,
    /// The values file's name under helm-values/ and its text.
    values: (&'static str, &'static str),
    /// Per-cluster values by dotted key: `spec.set` of a HelmChart, `spec.values` of a
    /// HelmChartConfig.
    per_cluster: fn(&NodeConfig) -> Vec<(&'static str, String)>,
}

macro_rules! seed {
    ($file:literal, $values:literal, $per_cluster:expr) => {
        Seed {
            file: $file,
            source: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../manifests/seed/",
                $file
            )),
            values: (
                $values,
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../helm-values/",
                    $values
                )),
            ),
            per_cluster: $per_cluster,
        }
    };
}

/// In the order they are written. The CNI config first: it is needed before anything runs.
const SEEDS: &[Seed] = &[
    seed!("rke2-cilium-config.yaml", "cilium.yaml", |_| Vec::new()),
    seed!("rke2-traefik-config.yaml", "traefik.yaml", traefik_values),
    seed!("canarie-longhorn.yaml", "longhorn.yaml", longhorn_set),
    seed!("canarie-fleet-crd.yaml", "fleet-crd.yaml", |_| Vec::new()),
    seed!("canarie-fleet.yaml", "fleet.yaml", |_| Vec::new()),
];

/// Where the seeded manifests' sources are explained.
const GUIDE: &str = "docs/rke2-and-manifests.md";

/// Objects seeded as they are (no chart, nothing per cluster): (file name, source).
const OBJECTS: &[(&str, &str)] = &[(
    "canarie-deny-imds-egress.yaml",
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/seed/canarie-deny-imds-egress.yaml"
    )),
)];

const GITREPO_FILE: &str = "canarie-gitrepo.yaml";
const GITREPO_SOURCE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../manifests/seed/canarie-gitrepo.yaml"
));

/// The file name of every manifest [`render`] can write, whatever the config: what the agent
/// owns in the manifests directory (a name no longer rendered is removed).
pub(super) fn file_names() -> impl Iterator<Item = &'static str> {
    SEEDS
        .iter()
        .map(|s| s.file)
        .chain(OBJECTS.iter().map(|(file, _)| *file))
        .chain([GITREPO_FILE])
}

/// Longhorn keeps this many replicas of each volume: one per data-disk node, at most three.
pub fn longhorn_replicas(config: &NodeConfig) -> u32 {
    config.cluster.storage_nodes.unwrap_or(1).clamp(1, 3)
}

fn longhorn_set(config: &NodeConfig) -> Vec<(&'static str, String)> {
    let replicas = longhorn_replicas(config).to_string();
    vec![
        // The default StorageClass's numberOfReplicas (PVCs)...
        ("persistence.defaultClassReplicaCount", replicas.clone()),
        // ...and the default for volumes created in the Longhorn UI.
        ("defaultSettings.defaultReplicaCount", replicas),
        // Where Longhorn creates the default disk on each labelled node: the data disk's
        // mount point (validation makes every data-disk node agree).
        (
            "defaultSettings.defaultDataPath",
            config.cluster.longhorn_data_path.display().to_string(),
        ),
    ]
}

fn traefik_values(config: &NodeConfig) -> Vec<(&'static str, String)> {
    match &config.cluster.public_ip {
        // The status address of every Ingress: external-dns publishes hosts from it. Without
        // it Ingresses carry no address.
        Some(ip) => vec![("providers.kubernetesIngress.ingressEndpoint.ip", ip.clone())],
        None => Vec::new(),
    }
}

/// Every manifest a server gets, in write order.
pub(super) fn render(config: &NodeConfig) -> Result<Vec<RenderedFile>> {
    let mut files = Vec::with_capacity(SEEDS.len() + OBJECTS.len() + 1);
    for seed in SEEDS {
        let doc = helm_object(seed, config)
            .with_context(|| format!("rendering manifests/seed/{}", seed.file))?;
        files.push(manifest(
            seed.file,
            std::slice::from_ref(&doc),
            &format!(
                "manifests/seed/{} and helm-values/{}",
                seed.file, seed.values.0
            ),
            GUIDE,
        )?);
    }
    for (file, source) in OBJECTS {
        let doc = parse(source).with_context(|| format!("rendering manifests/seed/{file}"))?;
        files.push(manifest(
            file,
            std::slice::from_ref(&doc),
            &format!("manifests/seed/{file}"),
            GUIDE,
        )?);
    }
    if let Some(repo) = &config.cluster.git_repo {
        // An empty `paths` would make Fleet deploy the whole repository: no bundles, no GitRepo.
        if !FLEET_BUNDLE_PATHS.is_empty() {
            let doc = gitrepo(repo, FLEET_BUNDLE_PATHS)
                .with_context(|| format!("rendering manifests/seed/{GITREPO_FILE}"))?;
            files.push(manifest(
                GITREPO_FILE,
                std::slice::from_ref(&doc),
                &format!("manifests/seed/{GITREPO_FILE} and the node config"),
                GUIDE,
            )?);
        }
    }
    Ok(files)
}

fn helm_object(seed: &Seed, config: &NodeConfig) -> Result<Value> {
    let mut doc = parse(seed.source)?;
    let is_config = doc.get("kind").and_then(Value::as_str) == Some("HelmChartConfig");
    let spec = spec_of(&mut doc)?;
    insert_new(spec, "valuesContent", seed.values.1.into())?;
    let values = (seed.per_cluster)(config);
    if !values.is_empty() {
        if is_config {
            let root = mapping_at(spec, "values")?;
            for (key, value) in values {
                let (parents, leaf) = key.rsplit_once('.').unwrap_or(("", key));
                let mut map = &mut *root;
                for part in parents.split('.').filter(|p| !p.is_empty()) {
                    map = mapping_at(map, part)?;
                }
                insert_new(map, leaf, value.into())?;
            }
        } else {
            let set = mapping_at(spec, "set")?;
            for (key, value) in values {
                insert_new(set, key, value.into())?;
            }
        }
    }
    Ok(doc)
}

/// The mapping under `key`, created when missing.
fn mapping_at<'m>(map: &'m mut Mapping, key: &str) -> Result<&'m mut Mapping> {
    match map
        .entry(key.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()))
    {
        Value::Mapping(m) => Ok(m),
        _ => bail!("{key} must be a mapping"),
    }
}

pub(super) fn gitrepo(repo: &GitRepoConfig, paths: &[&str]) -> Result<Value> {
    let mut doc = parse(GITREPO_SOURCE)?;
    let spec = spec_of(&mut doc)?;
    insert_new(spec, "repo", repo.url.as_str().into())?;
    // Fleet follows "master" when no branch is given; always say which.
    insert_new(spec, "branch", repo.branch.as_str().into())?;
    if let Some(secret) = &repo.auth_secret {
        insert_new(spec, "clientSecretName", secret.as_str().into())?;
    }
    insert_new(
        spec,
        "paths",
        Value::Sequence(paths.iter().map(|p| (*p).into()).collect()),
    )?;
    Ok(doc)
}

fn parse(source: &str) -> Result<Value> {
    let doc: Value = serde_yaml_ng::from_str(source).context("the seed is not YAML")?;
    if !doc.is_mapping() {
        bail!("the seed must hold exactly one object");
    }
    Ok(doc)
}

fn spec_of(doc: &mut Value) -> Result<&mut Mapping> {
    let root = doc.as_mapping_mut().context("the seed must be a mapping")?;
    mapping_at(root, "spec")
}

/// Fills in `key`, refusing a source (a seed, a template) that already sets it: a value
/// lives in one place.
pub(super) fn insert_new(map: &mut Mapping, key: &str, value: Value) -> Result<()> {
    if map.contains_key(key) {
        bail!("{key} is filled in by canarie-agent and must not be set in the source (a value lives in one place)");
    }
    map.insert(key.into(), value);
    Ok(())
}

/// The manifest file `file` holding `doc`, with a header naming its `sources` and the page
/// (`guide`) that says how to change them.
pub(super) fn manifest(
    file: &str,
    docs: &[Value],
    sources: &str,
    guide: &str,
) -> Result<RenderedFile> {
    let body = docs
        .iter()
        .map(yaml::to_string)
        .collect::<Result<Vec<_>>>()?
        .join("---\n");
    let contents = format!(
        "# Written by canarie-agent from {sources}.\n\
         # Changes made here are overwritten: change the sources ({guide}).\n\
         {body}"
    );
    Ok(RenderedFile {
        path: Path::new(RKE2_MANIFESTS_DIR).join(file),
        contents: contents.into_bytes(),
        mode: MANIFEST_MODE,
        effect: Effect::AppliedByRke2,
    })
}
