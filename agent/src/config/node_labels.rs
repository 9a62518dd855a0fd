//! `node_labels` and `node_taints`: what the node itself accepts when RKE2 starts it, and the
//! labels canarie-agent sets on its own.
//!
//! RKE2 hands `node-label` to kubelet as `--node-labels` and `node-taint` as
//! `--register-with-taints`, then the kubelet registers the Node with the API server. A value
//! either of them refuses stops the node at its first start, long after `config validate`
//! said yes; so every such rule is checked here, once, and each message names the rule.
//! Sources: reference/kubernetes/node-labels-and-taints.txt.
//!
//! This is the only check of these fields: `config validate`, `render`, `plan` and
//! `bootstrap` all parse through it, so they refuse the same configs with the same message.

use super::ConfigError;
use std::collections::HashMap;

type Check = Result<(), ConfigError>;

/// The label Longhorn looks for when `createDefaultDiskLabeledNodes` is on. canarie-agent
/// sets it on nodes whose data disk is mounted, and only there.
pub const LONGHORN_DEFAULT_DISK_LABEL: &str = "node.longhorn.io/create-default-disk";

/// Label keys canarie-agent sets itself, each with the reason a node config may not.
pub const AGENT_OWNED_LABELS: &[(&str, &str)] = &[(
    LONGHORN_DEFAULT_DISK_LABEL,
    "is set by canarie-agent when the data disk is mounted",
)];

/// The labels kubelet may set on its own Node in the kubernetes.io and k8s.io namespaces
/// (k8s.io/kubelet pkg/apis: kubeletLabels); anything else there makes kubelet exit.
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces (and their subdomains) kubelet may set (kubeletLabelNamespaces).
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Every rule for `node_labels`, in the order the node would meet them.
pub(super) fn check_labels(labels: &[String]) -> Check {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, label) in labels.iter().enumerate() {
        let path = format!("node_labels[{i}]");
        let Some((key, _)) = label
            .split_once('=')
            .filter(|(k, v)| qualified_name(k) && label_value(v))
        else {
            return Err(ConfigError::new(
                path,
                format!(
                    "{label:?} is not a node label: kubelet refuses it at start (--node-labels takes key=value, the key a qualified name [DNS-prefix/]name of at most 63 letters, digits, '-', '_' or '.', the value at most 63 of those, both starting and ending alphanumeric)"
                ),
            ));
        };
        if let Some((_, why)) = AGENT_OWNED_LABELS.iter().find(|(owned, _)| *owned == key) {
            return Err(ConfigError::new(
                path,
                format!("{key} {why}; remove it from the node config"),
            ));
        }
        if kubernetes_namespace(key) && !kubelet_label(key) {
            return Err(ConfigError::new(
                path,
                format!(
                    "{key} is in the kubernetes.io/k8s.io namespace, where kubelet refuses to start with any label but its own (--node-labels rule: only node.kubernetes.io/*, kubelet.kubernetes.io/* and the well-known kubernetes.io/hostname, kubernetes.io/os, kubernetes.io/arch, topology.kubernetes.io/zone, topology.kubernetes.io/region, node.kubernetes.io/instance-type and their beta forms); use a prefix of your own, or set the label with kubectl once the node has registered"
                ),
            ));
        }
        if let Some(first) = seen.insert(key, i) {
            return Err(ConfigError::new(
                path,
                format!(
                    "sets label {key} again (node_labels[{first}] sets it too): kubelet would keep one value and silently drop the other; keep one entry"
                ),
            ));
        }
    }
    Ok(())
}

/// Every rule for `node_taints`.
pub(super) fn check_taints(taints: &[String]) -> Check {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, taint) in taints.iter().enumerate() {
        let path = format!("node_taints[{i}]");
        let Some((key, effect)) = parse_taint(taint) else {
            return Err(ConfigError::new(
                path,
                format!(
                    "{taint:?} is not a taint: kubelet refuses it at start (--register-with-taints takes key=value:Effect or key:Effect, the key a qualified name and the value a label value; the API server requires the Effect, one of {})",
                    TAINT_EFFECTS.join(", ")
                ),
            ));
        };
        if let Some(first) = seen.insert((key, effect), i) {
            return Err(ConfigError::new(
                path,
                format!(
                    "repeats the taint {key} with effect {effect} (node_taints[{first}]): the API server refuses a Node whose taints are not unique by key and effect, so the node would never register"
                ),
            ));
        }
    }
    Ok(())
}

/// `key=value:Effect` or `key:Effect` as kubelet parses it (pkg/util/taints), with the
/// Effect the Node's validation requires: (key, effect) when valid.
fn parse_taint(taint: &str) -> Option<(&str, &str)> {
    let (kv, effect) = taint.split_once(':')?;
    if !TAINT_EFFECTS.contains(&effect) {
        return None;
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    (qualified_name(key) && label_value(value)).then_some((key, effect))
}

/// Kubernetes' IsQualifiedName: an optional DNS-subdomain prefix and `/`, then a name of
/// 1-63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    !name.is_empty() && label_value(name) && prefix.is_none_or(super::validate::is_dns_subdomain)
}

/// Kubernetes' IsValidLabelValue: empty, or 1-63 alphanumerics, `-`, `_`, `.`, starting and
/// ending alphanumeric.
fn label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            && value.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && value.ends_with(|ch: char| ch.is_ascii_alphanumeric()))
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_namespace(namespace: &str, domain: &str) -> bool {
    namespace == domain
        || namespace
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// kubelet's isKubernetesLabel.
fn kubernetes_namespace(key: &str) -> bool {
    let ns = label_namespace(key);
    in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io")
}

/// kubelet's IsKubeletLabel.
fn kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|allowed| in_namespace(label_namespace(key), allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[&str]) -> Check {
        check_labels(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn taints(items: &[&str]) -> Check {
        check_taints(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn labels_kubelet_accepts() {
        for ok in [
            "zone=1",
            "example.com/pool=workers",
            "empty=",
            "node.kubernetes.io/pool=a",
            "x.node.kubernetes.io/pool=a",
            "kubelet.kubernetes.io/x=y",
            "topology.kubernetes.io/zone=westeurope-1",
            "longhorn.io/other=true",
        ] {
            labels(&[ok]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn labels_kubelet_refuses_name_the_rule() {
        for (bad, rule) in [
            ("novalue", "--node-labels takes key=value"),
            ("-bad=x", "--node-labels takes key=value"),
            ("k=v,w", "--node-labels takes key=value"),
            ("UPPER_prefix.Example/x=y", "--node-labels takes key=value"),
            (
                &format!("k={}", "a".repeat(64)),
                "--node-labels takes key=value",
            ),
            (
                "node-role.kubernetes.io/worker=true",
                "kubelet refuses to start",
            ),
            ("kubernetes.io/role=worker", "kubelet refuses to start"),
            ("app.kubernetes.io/name=x", "kubelet refuses to start"),
            ("x.k8s.io/y=z", "kubelet refuses to start"),
            (
                "node-restriction.kubernetes.io/pool=a",
                "kubelet refuses to start",
            ),
            (
                "node.longhorn.io/create-default-disk=true",
                "is set by canarie-agent when the data disk is mounted",
            ),
            (
                "node.longhorn.io/create-default-disk=config",
                "is set by canarie-agent",
            ),
        ] {
            let err = labels(&[bad]).expect_err(bad);
            assert_eq!(err.path, "node_labels[0]");
            assert!(err.message.contains(rule), "{bad}: {err}");
        }
        // Look-alikes are not in the kubernetes.io namespace.
        labels(&["notkubernetes.io/x=y", "kubernetes.iox/y=z"]).unwrap();
    }

    #[test]
    fn a_label_key_twice_is_refused() {
        let err = labels(&["a=1", "b=2", "a=3"]).unwrap_err();
        assert_eq!(err.path, "node_labels[2]");
        assert!(err.message.contains("node_labels[0]"), "{err}");
    }

    #[test]
    fn taints_kubelet_accepts_and_refuses() {
        for ok in [
            "dedicated=storage:NoSchedule",
            "CriticalAddonsOnly=true:NoExecute",
            "example.com/flag:PreferNoSchedule",
            "k=v:NoSchedule",
        ] {
            super::check_taints(&[ok.to_string()]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "k=v",
            "k",
            "k=v:Sometimes",
            "k=v=w:NoSchedule",
            "k:v:NoSchedule",
            "-k=v:NoSchedule",
            "k=-v:NoSchedule",
        ] {
            let err = taints(&[bad]).expect_err(bad);
            assert!(
                err.message.contains("--register-with-taints"),
                "{bad}: {err}"
            );
        }
        let err = taints(&["k=a:NoSchedule", "k=b:NoExecute", "k=c:NoSchedule"]).unwrap_err();
        assert_eq!(err.path, "node_taints[2]");
        assert!(err.message.contains("unique by key and effect"), "{err}");
    }
}
