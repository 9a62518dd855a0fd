//! Per-cluster values the git bundles cannot carry, and the Longhorn UI's public Ingress.
//!
//! - ConfigMap `fleet-local/canarie-cluster-values`: one key per Helm release of the Phase
//!   5-7 bundles, each a YAML document of values that Fleet merges over the bundle's values
//!   file (`helm.valuesFrom`; the contract is in docs/fleet-bundles.md). Written on every
//!   server: without a DNS zone the `external-dns.yaml` key is left out, so external-dns
//!   stays in error instead of managing every zone its credentials reach, while the
//!   monitoring bundle still deploys with Grafana's Ingress off.
//! - Ingress `longhorn-system/longhorn-ui` and its basic-auth Traefik Middleware: Longhorn is
//!   seeded here, not by Fleet, and its host is per cluster, so the agent writes its Ingress
//!   too, from `longhorn-ui.yaml`. Only with a DNS zone *and* the UI's basic-auth login
//!   (`cluster_secrets.longhorn_ui_auth`): the UI has no login of its own.

use super::manifests::{insert_new, manifest};
use super::secrets::{LONGHORN_NAMESPACE, LONGHORN_UI_AUTH_SECRET};
use super::yaml;
use crate::config::NodeConfig;
use crate::nodefile::RenderedFile;
use anyhow::{bail, Context, Result};
use serde::Deserialize as _;
use serde_yaml_ng::{Mapping, Value};

pub const CLUSTER_VALUES_FILE: &str = "canarie-cluster-values.yaml";
pub const CLUSTER_VALUES_CONFIGMAP: &str = "canarie-cluster-values";
pub const CLUSTER_VALUES_NAMESPACE: &str = "fleet-local";
pub const LONGHORN_UI_FILE: &str = "canarie-longhorn-ui.yaml";

/// external-dns's TXT owner id when the config names no cluster.
pub const DEFAULT_CLUSTER_NAME: &str = "canarie";
/// The public hosts are `<label>.<cluster.dns_zone>`.
pub const GRAFANA_HOST_LABEL: &str = "grafana";
pub const LONGHORN_HOST_LABEL: &str = "longhorn";

/// Where these files' sources are explained.
const GUIDE: &str = "docs/day2.md";

const LONGHORN_UI_SOURCE: &str = include_str!("longhorn-ui.yaml");

/// `<label>.<zone>`.
pub fn public_host(label: &str, zone: &str) -> String {
    format!("{label}.{zone}")
}

/// The server's cluster values ConfigMap and, when it may be public, the Longhorn UI Ingress.
pub(super) fn render(config: &NodeConfig) -> Result<Vec<RenderedFile>> {
    let mut files = vec![cluster_values(config).context("rendering the cluster values")?];
    let login = config
        .cluster_secrets
        .as_ref()
        .is_some_and(|cs| cs.longhorn_ui_auth.is_some());
    if let (Some(zone), true) = (&config.cluster.dns_zone, login) {
        files.push(longhorn_ui(zone).context("rendering the Longhorn UI Ingress")?);
    }
    Ok(files)
}

fn cluster_values(config: &NodeConfig) -> Result<RenderedFile> {
    let zone = config.cluster.dns_zone.as_deref();
    let mut data = Mapping::new();
    if let Some(zone) = zone {
        let owner = config
            .cluster
            .name
            .as_deref()
            .unwrap_or(DEFAULT_CLUSTER_NAME);
        let external_dns = mapping([
            ("domainFilters", Value::Sequence(vec![zone.into()])),
            // Marks the records this cluster owns; policy sync deletes only those.
            ("txtOwnerId", owner.into()),
        ]);
        data.insert(
            "external-dns.yaml".into(),
            values_text(external_dns)?.into(),
        );
    }
    data.insert(
        "kube-prometheus-stack.yaml".into(),
        values_text(grafana_values(zone))?.into(),
    );
    let doc = mapping([
        ("apiVersion", "v1".into()),
        ("kind", "ConfigMap".into()),
        (
            "metadata",
            mapping([
                ("name", CLUSTER_VALUES_CONFIGMAP.into()),
                ("namespace", CLUSTER_VALUES_NAMESPACE.into()),
            ]),
        ),
        ("data", Value::Mapping(data)),
    ]);
    manifest(
        CLUSTER_VALUES_FILE,
        &[doc],
        "the node config (cluster.dns_zone, cluster.name); read by the Fleet bundles' helm.valuesFrom",
        GUIDE,
    )
}

/// Grafana's Ingress: on with the zone (host and certificate), off without one. Class and
/// annotations are in the monitoring bundle's values file.
fn grafana_values(zone: Option<&str>) -> Value {
    let ingress = match zone {
        Some(zone) => {
            let host = public_host(GRAFANA_HOST_LABEL, zone);
            mapping([
                ("enabled", true.into()),
                ("hosts", Value::Sequence(vec![host.as_str().into()])),
                (
                    "tls",
                    Value::Sequence(vec![mapping([
                        ("secretName", "grafana-tls".into()),
                        ("hosts", Value::Sequence(vec![host.as_str().into()])),
                    ])]),
                ),
            ])
        }
        None => mapping([("enabled", false.into())]),
    };
    let mut grafana = vec![("ingress", ingress)];
    if let Some(zone) = zone {
        // Links in alerts and redirects: Grafana would otherwise build http://HOST:3000/.
        let url = format!("https://{}/", public_host(GRAFANA_HOST_LABEL, zone));
        grafana.push((
            "grafana.ini",
            mapping([("server", mapping([("root_url", url.into())]))]),
        ));
    }
    mapping([("grafana", mapping_vec(grafana))])
}

fn longhorn_ui(zone: &str) -> Result<RenderedFile> {
    let host = public_host(LONGHORN_HOST_LABEL, zone);
    let mut docs = serde_yaml_ng::Deserializer::from_str(LONGHORN_UI_SOURCE)
        .map(Value::deserialize)
        .collect::<Result<Vec<Value>, _>>()
        .context("longhorn-ui.yaml is not YAML")?;
    let [middleware, ingress] = docs.as_mut_slice() else {
        bail!("longhorn-ui.yaml must hold two objects: the Middleware, then the Ingress");
    };
    let (kind, name) = object_in_longhorn_ns(middleware)?;
    if kind != "Middleware" {
        bail!("longhorn-ui.yaml: the first object must be the Middleware, not a {kind}");
    }
    // Traefik's name for a Middleware of the Kubernetes CRD provider.
    let reference = format!("{LONGHORN_NAMESPACE}-{name}@kubernetescrd");
    let basic_auth = middleware
        .get_mut("spec")
        .and_then(|s| s.get_mut("basicAuth"))
        .and_then(Value::as_mapping_mut)
        .context("longhorn-ui.yaml: the Middleware has no spec.basicAuth")?;
    insert_new(basic_auth, "secret", LONGHORN_UI_AUTH_SECRET.into())?;

    let (kind, _) = object_in_longhorn_ns(ingress)?;
    if kind != "Ingress" {
        bail!("longhorn-ui.yaml: the second object must be the Ingress, not a {kind}");
    }
    let root = ingress
        .as_mapping_mut()
        .context("longhorn-ui.yaml: the Ingress must be a mapping")?;
    let annotations = root
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_mapping_mut)
        .context("longhorn-ui.yaml: the Ingress has no annotations")?;
    insert_new(
        annotations,
        "traefik.ingress.kubernetes.io/router.middlewares",
        reference.into(),
    )?;
    let spec = root
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .context("longhorn-ui.yaml: the Ingress has no spec")?;
    insert_new(
        spec,
        "tls",
        Value::Sequence(vec![mapping([
            ("hosts", Value::Sequence(vec![host.as_str().into()])),
            ("secretName", "longhorn-ui-tls".into()),
        ])]),
    )?;
    let backend = mapping([(
        "service",
        mapping([
            // The Longhorn chart's UI Service.
            ("name", "longhorn-frontend".into()),
            ("port", mapping([("number", 80.into())])),
        ]),
    )]);
    insert_new(
        spec,
        "rules",
        Value::Sequence(vec![mapping([
            ("host", host.as_str().into()),
            (
                "http",
                mapping([(
                    "paths",
                    Value::Sequence(vec![mapping([
                        ("path", "/".into()),
                        ("pathType", "Prefix".into()),
                        ("backend", backend),
                    ])]),
                )]),
            ),
        ])]),
    )?;
    manifest(
        LONGHORN_UI_FILE,
        &docs,
        "agent/src/rke2/longhorn-ui.yaml and cluster.dns_zone",
        GUIDE,
    )
}

/// Kind and name of an object of longhorn-ui.yaml, which must live beside the auth Secret
/// and the UI's Service (a Middleware can only read Secrets of its own namespace).
fn object_in_longhorn_ns(doc: &Value) -> Result<(String, String)> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let kind = text(doc.get("kind")).context("longhorn-ui.yaml: an object has no kind")?;
    let metadata = doc.get("metadata");
    let name = text(metadata.and_then(|m| m.get("name")))
        .with_context(|| format!("longhorn-ui.yaml: the {kind} has no name"))?;
    if text(metadata.and_then(|m| m.get("namespace"))).as_deref() != Some(LONGHORN_NAMESPACE) {
        bail!("longhorn-ui.yaml: the {kind} must be in namespace {LONGHORN_NAMESPACE}, with the auth Secret");
    }
    Ok((kind, name))
}

fn mapping<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

fn mapping_vec(entries: Vec<(&str, Value)>) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// A values document as text: what a ConfigMap key holds.
fn values_text(values: Value) -> Result<String> {
    yaml::to_string(&values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn server(extra: serde_json::Value) -> NodeConfig {
        let mut doc = serde_json::json!({
            "version": 1,
            "role": "server",
            "cluster": {},
            "join_token": {"vault": "kv-canarie", "secret": "rke2-join-token"}
        });
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        config::parse(doc.to_string().as_bytes()).unwrap()
    }

    fn parsed(file: &RenderedFile) -> Value {
        serde_yaml_ng::from_slice(&file.contents).unwrap()
    }

    fn key(doc: &Value, key: &str) -> Option<Value> {
        doc["data"]
            .get(key)
            .map(|text| serde_yaml_ng::from_str(text.as_str().unwrap()).unwrap())
    }

    #[test]
    fn with_a_zone_external_dns_and_grafana_get_their_values() {
        let c = server(serde_json::json!({
            "cluster": {"dns_zone": "k8s.example.com", "name": "prod"}
        }));
        let files = render(&c).unwrap();
        assert_eq!(files.len(), 1, "no Longhorn UI without its login");
        let cm = parsed(&files[0]);
        assert_eq!(cm["metadata"]["namespace"], "fleet-local");
        let dns = key(&cm, "external-dns.yaml").unwrap();
        assert_eq!(dns["domainFilters"][0], "k8s.example.com");
        assert_eq!(dns["txtOwnerId"], "prod");
        let kps = key(&cm, "kube-prometheus-stack.yaml").unwrap();
        assert_eq!(kps["grafana"]["ingress"]["enabled"], true);
        assert_eq!(
            kps["grafana"]["ingress"]["hosts"][0],
            "grafana.k8s.example.com"
        );
        assert_eq!(
            kps["grafana"]["ingress"]["tls"][0]["hosts"][0],
            "grafana.k8s.example.com"
        );
        assert_eq!(
            kps["grafana"]["grafana.ini"]["server"]["root_url"],
            "https://grafana.k8s.example.com/"
        );
    }

    #[test]
    fn without_a_zone_external_dns_has_no_values_and_grafana_no_ingress() {
        let files = render(&server(serde_json::json!({}))).unwrap();
        let cm = parsed(&files[0]);
        assert!(key(&cm, "external-dns.yaml").is_none());
        let kps = key(&cm, "kube-prometheus-stack.yaml").unwrap();
        assert_eq!(kps["grafana"]["ingress"]["enabled"], false);
    }

    #[test]
    fn the_longhorn_ui_is_public_only_behind_its_login() {
        let c = server(serde_json::json!({
            "cluster": {"dns_zone": "k8s.example.com"},
            "cluster_secrets": {"longhorn_ui_auth": {"secret": "longhorn-ui-password"}}
        }));
        let files = render(&c).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[1].path.ends_with(LONGHORN_UI_FILE));
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_slice(&files[1].contents)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        let [mw, ing] = docs.as_slice() else {
            panic!("two objects: {docs:?}")
        };
        assert_eq!(mw["kind"], "Middleware");
        assert_eq!(mw["spec"]["basicAuth"]["secret"], LONGHORN_UI_AUTH_SECRET);
        assert_eq!(mw["metadata"]["namespace"], LONGHORN_NAMESPACE);
        assert_eq!(ing["kind"], "Ingress");
        assert_eq!(ing["spec"]["ingressClassName"], "traefik");
        let ann = &ing["metadata"]["annotations"];
        assert_eq!(
            ann["traefik.ingress.kubernetes.io/router.middlewares"],
            "longhorn-system-longhorn-ui-auth@kubernetescrd"
        );
        assert_eq!(ann["cert-manager.io/cluster-issuer"], "letsencrypt-prod");
        assert_eq!(ing["spec"]["rules"][0]["host"], "longhorn.k8s.example.com");
        assert_eq!(
            ing["spec"]["tls"][0]["hosts"][0],
            "longhorn.k8s.example.com"
        );
        assert_eq!(
            ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
            "longhorn-frontend"
        );
        assert_eq!(files[1].mode, 0o600);
    }
}
