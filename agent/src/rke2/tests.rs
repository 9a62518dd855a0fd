use super::*;
use crate::config::{self, NodeConfig};
use crate::fsutil::WriteOutcome;
use crate::paths::Root;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

const SERVER_JSON: &str = include_str!("../../../examples/server.json");
const AGENT_JSON: &str = include_str!("../../../examples/agent.json");
const FLAGS_JSON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../reference/rke2/flags.json");

fn server() -> NodeConfig {
    config::parse(SERVER_JSON.as_bytes()).expect("examples/server.json is valid")
}

fn agent() -> NodeConfig {
    config::parse(AGENT_JSON.as_bytes()).expect("examples/agent.json is valid")
}

const MOUNTED: NodeFacts = NodeFacts {
    data_disk_mounted: true,
};
const NOT_MOUNTED: NodeFacts = NodeFacts {
    data_disk_mounted: false,
};

fn files(config: &NodeConfig, facts: &NodeFacts) -> BTreeMap<String, RenderedFile> {
    render(config, facts)
        .unwrap()
        .into_iter()
        .map(|f| (f.path.to_str().unwrap().to_string(), f))
        .collect()
}

fn yaml_of(file: &RenderedFile) -> Value {
    serde_yaml_ng::from_slice(&file.contents)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", file.path.display()))
}

fn rke2_config(config: &NodeConfig, facts: &NodeFacts) -> serde_yaml_ng::Mapping {
    let all = files(config, facts);
    yaml_of(&all[RKE2_CONFIG]).as_mapping().unwrap().clone()
}

fn keys(m: &serde_yaml_ng::Mapping) -> Vec<String> {
    m.keys().map(|k| k.as_str().unwrap().to_string()).collect()
}

fn labels(m: &serde_yaml_ng::Mapping) -> Vec<String> {
    m.get("node-label")
        .map(|v| {
            v.as_sequence()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn manifest(config: &NodeConfig, name: &str) -> Value {
    let all = files(config, &MOUNTED);
    yaml_of(&all[&format!("{}/{name}", crate::paths::RKE2_MANIFESTS_DIR)])
}

/// RKE2's flags for a role from the reference flag table: name → type.
fn reference_flags(role: &str) -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(FLAGS_JSON).unwrap_or_else(|e| panic!("reading {FLAGS_JSON}: {e}"));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc[role]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn with_json(base: &str, edit: impl FnOnce(&mut serde_json::Value)) -> NodeConfig {
    let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
    edit(&mut v);
    config::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
}

#[test]
fn every_key_written_is_a_real_rke2_flag_of_the_role_with_the_right_type() {
    let full_server = with_json(SERVER_JSON, |v| {
        v["cluster"]["server_url"] = "https://10.20.0.5:9345".into();
        v["node_labels"] = serde_json::json!(["a=b"]);
        v["node_taints"] = serde_json::json!(["c=d:NoSchedule"]);
    });
    let full_agent = with_json(AGENT_JSON, |v| {
        v["node_labels"] = serde_json::json!(["a=b"]);
        v["node_taints"] = serde_json::json!(["c=d:NoSchedule"]);
    });
    for (config, role) in [(full_server, "server"), (full_agent, "agent")] {
        let flags = reference_flags(role);
        let m = rke2_config(&config, &MOUNTED);
        // Every key this module knows for the role shows up in the fully loaded config.
        assert_eq!(keys(&m), node_config::keys_for(config.role), "{role}");
        for (k, v) in &m {
            let k = k.as_str().unwrap();
            let ty = flags
                .get(k)
                .unwrap_or_else(|| panic!("{k} is not an RKE2 {role} flag"));
            let ok = match ty.as_str() {
                "string-slice" => {
                    v.as_sequence()
                        .is_some_and(|s| s.iter().all(Value::is_string))
                        || v.is_string()
                }
                "bool" => v.is_bool(),
                "int" => v.is_u64(),
                "string" => v.is_string(),
                other => panic!("{k}: unexpected flag type {other}"),
            };
            assert!(ok, "{role} {k}: {v:?} does not fit flag type {ty}");
        }
    }
}

#[test]
fn servers_get_the_cluster_settings_and_agents_only_agent_keys() {
    let s = rke2_config(&server(), &MOUNTED);
    assert_eq!(s["cni"], Value::from("cilium"));
    assert_eq!(s["disable-kube-proxy"], Value::from(true));
    assert_eq!(
        s["ingress-controller"],
        serde_yaml_ng::from_str::<Value>("[traefik]").unwrap()
    );
    // The agent's own ingress-nginx AddOn of clusters built before Traefik is uninstalled.
    assert_eq!(
        s["disable"],
        serde_yaml_ng::from_str::<Value>("[canarie-ingress-nginx]").unwrap()
    );
    assert_eq!(
        s["tls-san"],
        serde_yaml_ng::from_str::<Value>("[cp-01, api.canarie.example.com, 20.30.40.50]").unwrap()
    );
    assert_eq!(
        s["pod-security-admission-config-file"],
        Value::from(PSA_CONFIG)
    );
    assert_eq!(s["node-name"], Value::from("cp-01"));

    let a = rke2_config(&agent(), &MOUNTED);
    for k in keys(&a) {
        assert!(AGENT_KEYS.contains(&k.as_str()), "agent config has {k}");
    }
    for server_only in [
        "cni",
        "disable-kube-proxy",
        "disable",
        "tls-san",
        "write-kubeconfig-mode",
    ] {
        assert!(
            !a.contains_key(server_only),
            "agent config must not have {server_only}"
        );
    }
    let agent_paths: Vec<_> = files(&agent(), &MOUNTED).into_keys().collect();
    assert_eq!(
        agent_paths,
        [
            RKE2_CONFIG,
            "/etc/systemd/system/rke2-agent.service.d/10-canarie-data-disk.conf"
        ],
        "an agent gets no PSA config and no manifests"
    );
}

#[test]
fn longhorn_label_only_when_the_data_disk_is_mounted() {
    let label = format!("{LONGHORN_DEFAULT_DISK_LABEL}=true");
    for config in [server(), agent()] {
        assert!(labels(&rke2_config(&config, &MOUNTED)).contains(&label));
        assert!(!labels(&rke2_config(&config, &NOT_MOUNTED)).contains(&label));
        assert!(
            !rke2_config(&config, &NOT_MOUNTED).contains_key("node-label"),
            "no labels, no key"
        );
    }
    let with_labels = with_json(AGENT_JSON, |v| {
        v["node_labels"] = serde_json::json!(["zone=1"])
    });
    assert_eq!(
        labels(&rke2_config(&with_labels, &MOUNTED)),
        ["zone=1", label.as_str()]
    );
    assert_eq!(labels(&rke2_config(&with_labels, &NOT_MOUNTED)), ["zone=1"]);

    // A config that claims the agent's label never gets here: parsing (the one validation
    // `config validate`, `render` and `bootstrap` share) refuses it.
    let mut claims_it: serde_json::Value = serde_json::from_str(AGENT_JSON).unwrap();
    claims_it["node_labels"] = serde_json::json!([format!("{LONGHORN_DEFAULT_DISK_LABEL}=true")]);
    let err = config::parse(&serde_json::to_vec(&claims_it).unwrap()).unwrap_err();
    assert_eq!(err.path, "node_labels[0]", "{err}");
}

#[test]
fn server_key_for_agents_and_joining_servers_only() {
    assert_eq!(
        rke2_config(&agent(), &MOUNTED)["server"],
        Value::from("https://10.20.0.4:9345")
    );
    assert!(
        !rke2_config(&server(), &MOUNTED).contains_key("server"),
        "the first server starts a cluster"
    );
    let joining = with_json(SERVER_JSON, |v| {
        v["cluster"]["server_url"] = "https://10.20.0.4:9345".into()
    });
    assert_eq!(
        rke2_config(&joining, &MOUNTED)["server"],
        Value::from("https://10.20.0.4:9345")
    );
}

#[test]
fn write_kubeconfig_mode_is_a_quoted_string() {
    let text = String::from_utf8(files(&server(), &MOUNTED)[RKE2_CONFIG].contents.clone()).unwrap();
    assert!(
        text.lines().any(|l| l == "write-kubeconfig-mode: \"0600\""),
        "{text}"
    );
    assert_eq!(
        rke2_config(&server(), &MOUNTED)["write-kubeconfig-mode"],
        Value::from("0600")
    );
}

#[test]
fn rendering_twice_gives_identical_bytes() {
    for config in [server(), agent()] {
        assert_eq!(
            render(&config, &MOUNTED).unwrap(),
            render(&config, &MOUNTED).unwrap()
        );
    }
    let token = SecretString::from("K10abc::server:def");
    assert_eq!(
        render_token_dropin(&token).expose_contents(),
        render_token_dropin(&token).expose_contents()
    );
}

#[test]
fn a_new_public_ip_changes_only_the_traefik_config() {
    let before = files(&server(), &MOUNTED);
    let moved = with_json(SERVER_JSON, |v| {
        v["cluster"]["public_ip"] = "20.30.40.99".into()
    });
    let after = files(&moved, &MOUNTED);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let changed: Vec<_> = before
        .keys()
        .filter(|p| before[*p] != after[*p])
        .cloned()
        .collect();
    assert_eq!(
        changed,
        [format!(
            "{}/rke2-traefik-config.yaml",
            crate::paths::RKE2_MANIFESTS_DIR
        )]
    );
    let traefik = manifest(&moved, "rke2-traefik-config.yaml");
    // A HelmChartConfig has no `set`: the address goes in the structured values.
    assert_eq!(
        traefik["spec"]["values"]["providers"]["kubernetesIngress"]["ingressEndpoint"]["ip"],
        Value::from("20.30.40.99")
    );
    assert!(traefik["spec"].get("set").is_none());
    // The tls-san list is the operator's: it is not derived from the public IP.
    assert_eq!(before[RKE2_CONFIG], after[RKE2_CONFIG]);

    let none = with_json(SERVER_JSON, |v| {
        v["cluster"].as_object_mut().unwrap().remove("public_ip");
    });
    assert!(manifest(&none, "rke2-traefik-config.yaml")["spec"]
        .get("values")
        .is_none());
}

#[test]
fn set_values_are_strings_and_replicas_fit_the_storage_nodes() {
    for (nodes, want) in [
        (None, "1"),
        (Some(1), "1"),
        (Some(2), "2"),
        (Some(3), "3"),
        (Some(7), "3"),
    ] {
        let config = with_json(SERVER_JSON, |v| match nodes {
            Some(n) => v["cluster"]["storage_nodes"] = n.into(),
            None => {
                v["cluster"]
                    .as_object_mut()
                    .unwrap()
                    .remove("storage_nodes");
            }
        });
        let set = manifest(&config, "canarie-longhorn.yaml")["spec"]["set"].clone();
        assert_eq!(
            set["persistence.defaultClassReplicaCount"],
            Value::from(want),
            "{nodes:?}"
        );
        assert_eq!(
            set["defaultSettings.defaultReplicaCount"],
            Value::from(want),
            "{nodes:?}"
        );
    }
    for (path, file) in files(&server(), &MOUNTED) {
        if !path.starts_with(crate::paths::RKE2_MANIFESTS_DIR) {
            continue;
        }
        if let Some(set) = yaml_of(&file)["spec"].get("set") {
            for (k, v) in set.as_mapping().unwrap() {
                assert!(v.is_string(), "{path}: set {k:?} = {v:?} must be a string");
            }
        }
    }
}

#[test]
fn longhorn_data_path_reaches_the_chart_as_default_data_path() {
    let key = "defaultSettings.defaultDataPath";
    let set = |c: &NodeConfig| manifest(c, "canarie-longhorn.yaml")["spec"]["set"][key].clone();
    assert_eq!(
        set(&server()),
        Value::from("/var/lib/longhorn"),
        "the default"
    );
    let custom = with_json(SERVER_JSON, |v| {
        v["cluster"]["longhorn_data_path"] = "/srv/longhorn".into();
        v["data_disk"] = serde_json::json!({"lun": 0, "mount_point": "/srv/longhorn"});
    });
    assert_eq!(set(&custom), Value::from("/srv/longhorn"));
    // The path moves only Longhorn's manifest; the drop-in follows the mount point.
    let before = files(&server(), &MOUNTED);
    let after = files(&custom, &MOUNTED);
    let longhorn = format!("{}/canarie-longhorn.yaml", crate::paths::RKE2_MANIFESTS_DIR);
    for (path, file) in &before {
        if path.starts_with(crate::paths::RKE2_MANIFESTS_DIR) {
            assert_eq!(
                file.contents != after[path].contents,
                *path == longhorn,
                "{path}"
            );
        }
    }
}

#[test]
fn values_content_is_exactly_the_values_file() {
    let pairs = [
        (
            "rke2-cilium-config.yaml",
            include_str!("../../../helm-values/cilium.yaml"),
        ),
        (
            "canarie-longhorn.yaml",
            include_str!("../../../helm-values/longhorn.yaml"),
        ),
        (
            "rke2-traefik-config.yaml",
            include_str!("../../../helm-values/traefik.yaml"),
        ),
        (
            "canarie-fleet-crd.yaml",
            include_str!("../../../helm-values/fleet-crd.yaml"),
        ),
        (
            "canarie-fleet.yaml",
            include_str!("../../../helm-values/fleet.yaml"),
        ),
    ];
    for (file, values) in pairs {
        let doc = manifest(&server(), file);
        assert_eq!(
            doc["spec"]["valuesContent"].as_str(),
            Some(values),
            "{file}"
        );
    }
    let cilium = manifest(&server(), "rke2-cilium-config.yaml");
    assert_eq!(
        (cilium["kind"].as_str(), cilium["metadata"]["name"].as_str()),
        (Some("HelmChartConfig"), Some("rke2-cilium"))
    );
    assert_eq!(cilium["metadata"]["namespace"], Value::from("kube-system"));
    let traefik = manifest(&server(), "rke2-traefik-config.yaml");
    assert_eq!(
        (
            traefik["kind"].as_str(),
            traefik["metadata"]["name"].as_str(),
            traefik["metadata"]["namespace"].as_str()
        ),
        (
            Some("HelmChartConfig"),
            Some("rke2-traefik"),
            Some("kube-system")
        )
    );
}

#[test]
fn gitrepo_follows_the_config_and_lists_the_bundles() {
    let path = format!("{}/canarie-gitrepo.yaml", crate::paths::RKE2_MANIFESTS_DIR);
    let all = files(&server(), &MOUNTED);
    if FLEET_BUNDLE_PATHS.is_empty() {
        assert!(
            !all.contains_key(&path),
            "no bundles: no GitRepo (empty paths would deploy the whole repository)"
        );
        // The object itself is still well-formed for when bundles exist.
        let repo = server().cluster.git_repo.unwrap();
        let doc = manifests::gitrepo(&repo, &["manifests/bundles/x"]).unwrap();
        assert_eq!(
            doc["spec"]["paths"],
            serde_yaml_ng::from_str::<Value>("[manifests/bundles/x]").unwrap()
        );
        return;
    }
    let doc = yaml_of(&all[&path]);
    assert_eq!(doc["metadata"]["namespace"], Value::from("fleet-local"));
    assert_eq!(
        doc["spec"]["repo"],
        Value::from("https://github.com/example/canarie.git")
    );
    assert_eq!(doc["spec"]["branch"], Value::from("main"));
    assert_eq!(
        doc["spec"]["clientSecretName"],
        Value::from("canarie-git-auth")
    );
    let paths: Vec<&str> = doc["spec"]["paths"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(paths, FLEET_BUNDLE_PATHS);
    assert!(
        paths.iter().all(|p| p.starts_with("manifests/bundles/")),
        "{paths:?}"
    );

    let public = with_json(SERVER_JSON, |v| {
        v["cluster"]["git_repo"]
            .as_object_mut()
            .unwrap()
            .remove("auth_secret");
    });
    assert!(manifest(&public, "canarie-gitrepo.yaml")["spec"]
        .get("clientSecretName")
        .is_none());
    let no_repo = with_json(SERVER_JSON, |v| {
        v["cluster"].as_object_mut().unwrap().remove("git_repo");
    });
    assert!(!files(&no_repo, &MOUNTED).contains_key(&path));
}

#[test]
fn bundle_paths_match_the_tree() {
    let bundles = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/bundles");
    let mut want = Vec::new();
    if let Ok(entries) = std::fs::read_dir(bundles) {
        for e in entries.flatten() {
            let has_fleet_yaml = walk_has_fleet_yaml(&e.path());
            if e.path().is_dir() && has_fleet_yaml {
                want.push(format!(
                    "manifests/bundles/{}",
                    e.file_name().to_str().unwrap()
                ));
            }
        }
    }
    want.sort();
    assert_eq!(
        FLEET_BUNDLE_PATHS, want,
        "build.rs did not rerun after manifests/bundles changed?"
    );
}

fn walk_has_fleet_yaml(dir: &Path) -> bool {
    dir.join("fleet.yaml").is_file()
        || dir.join("fleet.yml").is_file()
        || std::fs::read_dir(dir).is_ok_and(|es| {
            es.flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()) && walk_has_fleet_yaml(&e.path()))
        })
}

#[test]
fn data_disk_dropin_requires_the_mount_for_the_roles_unit() {
    // The example server has no data disk; a server that is also a storage node does.
    let storage_server = with_json(SERVER_JSON, |v| {
        v["data_disk"] = serde_json::json!({"lun": 0})
    });
    let s = files(&storage_server, &MOUNTED);
    let dropin = &s["/etc/systemd/system/rke2-server.service.d/10-canarie-data-disk.conf"];
    let text = String::from_utf8(dropin.contents.clone()).unwrap();
    assert!(
        text.contains("\n[Unit]\nRequiresMountsFor=/var/lib/longhorn\n"),
        "{text}"
    );
    assert_eq!((dropin.mode, dropin.effect), (0o644, Effect::DaemonReload));

    let no_disk = with_json(AGENT_JSON, |v| {
        v.as_object_mut().unwrap().remove("data_disk");
    });
    assert!(!files(&no_disk, &NOT_MOUNTED)
        .keys()
        .any(|p| p.starts_with("/etc/systemd")));

    // Validation admits neither (cluster.longhorn_data_path is plain path characters and the
    // mount point must equal it); rendering still guards itself against such a config.
    let mount_at = |dir: &str| {
        let mut c = agent();
        c.data_disk.as_mut().unwrap().mount_point = dir.into();
        c
    };
    let percent = mount_at("/srv/long%horn");
    let text = String::from_utf8(
        files(&percent, &MOUNTED)
            ["/etc/systemd/system/rke2-agent.service.d/10-canarie-data-disk.conf"]
            .contents
            .clone(),
    )
    .unwrap();
    assert!(
        text.contains("RequiresMountsFor=/srv/long%%horn\n"),
        "{text}"
    );
    let spaced = mount_at("/srv/long horn");
    let err = render(&spaced, &MOUNTED).unwrap_err();
    assert!(
        format!("{err:#}").contains("data_disk.mount_point"),
        "{err:#}"
    );
}

fn state_disk() -> config::ServerStateDiskConfig {
    let v = with_json(SERVER_JSON, |v| {
        v["server_state_disk"] = serde_json::json!({"lun": 1});
    });
    v.server_state_disk.unwrap()
}

#[test]
fn the_server_state_disk_dropin_makes_rke2_server_require_its_mount() {
    let with_state = with_json(SERVER_JSON, |v| {
        v["server_state_disk"] = serde_json::json!({"lun": 1});
        v["data_disk"] = serde_json::json!({"lun": 0});
    });
    let s = files(&with_state, &MOUNTED);
    let dropin = &s["/etc/systemd/system/rke2-server.service.d/10-canarie-server-state-disk.conf"];
    let text = String::from_utf8(dropin.contents.clone()).unwrap();
    assert!(
        text.contains("\n[Unit]\nRequiresMountsFor=/var/lib/rancher/rke2/server\n"),
        "{text}"
    );
    assert!(text.contains("(server_state_disk)"), "{text}");
    assert_eq!((dropin.mode, dropin.effect), (0o644, Effect::DaemonReload));
    // Both disks, each with its own drop-in.
    assert!(s.contains_key("/etc/systemd/system/rke2-server.service.d/10-canarie-data-disk.conf"));
    // Without the disk, no drop-in: the server keeps its state on the OS disk.
    assert!(!files(&server(), &MOUNTED)
        .keys()
        .any(|p| p.ends_with("10-canarie-server-state-disk.conf")));
}

#[test]
fn etcd_snapshots_are_explicit_on_servers_with_overridable_defaults() {
    let s = rke2_config(&server(), &MOUNTED);
    assert_eq!(
        s["etcd-snapshot-schedule-cron"],
        Value::from(ETCD_SNAPSHOT_SCHEDULE_CRON)
    );
    assert_eq!(
        s["etcd-snapshot-retention"],
        Value::from(ETCD_SNAPSHOT_RETENTION)
    );
    // No etcd-snapshot-dir: RKE2's default, db/snapshots under the server state directory,
    // is on the state disk.
    assert!(!s.contains_key("etcd-snapshot-dir"));
    let tuned = with_json(SERVER_JSON, |v| {
        v["etcd_snapshots"] = serde_json::json!({"schedule_cron": "30 1 * * *", "retention": 3});
    });
    let t = rke2_config(&tuned, &MOUNTED);
    assert_eq!(t["etcd-snapshot-schedule-cron"], Value::from("30 1 * * *"));
    assert_eq!(t["etcd-snapshot-retention"], Value::from(3));
    let a = rke2_config(&agent(), &MOUNTED);
    assert!(!a.contains_key("etcd-snapshot-retention"));
    // The documented defaults are these.
    let docs = include_str!("../../../docs/configuration.md");
    assert!(docs.contains(&format!(
        "| `etcd_snapshots.schedule_cron` | five-field cron | `{ETCD_SNAPSHOT_SCHEDULE_CRON}` |"
    )));
    assert!(docs.contains(&format!(
        "| `etcd_snapshots.retention` | integer ≥ 1 | {ETCD_SNAPSHOT_RETENTION} |"
    )));
}

#[test]
fn psa_config_enforces_baseline_and_exempts_the_infra_namespaces() {
    let all = files(&server(), &MOUNTED);
    let psa = yaml_of(&all[PSA_CONFIG]);
    let conf = &psa["plugins"][0]["configuration"];
    assert_eq!(psa["plugins"][0]["name"], Value::from("PodSecurity"));
    assert_eq!(conf["defaults"]["enforce"], Value::from("baseline"));
    let exempt: Vec<&str> = conf["exemptions"]["namespaces"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // Every namespace a seeded chart installs into must be exempt, or its pods are refused.
    for doc in all
        .iter()
        .filter(|(p, _)| p.starts_with(crate::paths::RKE2_MANIFESTS_DIR))
        .map(|(_, f)| yaml_of(f))
    {
        for ns in [
            doc["spec"]["targetNamespace"].as_str(),
            doc["metadata"]["namespace"].as_str(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(exempt.contains(&ns), "{ns} is not exempt");
        }
    }
    // The whole list is held to manifests/facts/namespaces.yaml by
    // manifests/tests/test_namespaces.py (the table says why each is exempt).
}

#[test]
fn token_dropin_hides_its_contents_from_debug() {
    let token = SecretString::from("K10supersecret::server:hunter2");
    let file = render_token_dropin(&token);
    assert_eq!(file.path, Path::new(RKE2_TOKEN_DROPIN));
    assert_eq!((file.mode, file.effect), (0o600, Effect::RestartRke2));
    let debug = format!("{file:?} {file:#?}");
    assert!(
        !debug.contains("supersecret") && !debug.contains("hunter2"),
        "{debug}"
    );
    assert!(debug.contains("REDACTED"), "{debug}");
    let doc: Value = serde_yaml_ng::from_slice(file.expose_contents()).unwrap();
    assert_eq!(doc["token"], Value::from("K10supersecret::server:hunter2"));

    // A token YAML 1.1 would retype stays a string.
    let odd = render_token_dropin(&SecretString::from("0644"));
    assert!(std::str::from_utf8(odd.expose_contents())
        .unwrap()
        .ends_with("token: \"0644\"\n"));
}

#[test]
fn files_are_written_once_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let rendered = render(&server(), &MOUNTED).unwrap();
    let token = render_token_dropin(&SecretString::from("t0ken"));
    for f in &rendered {
        assert!(!f.is_current(&root).unwrap());
        assert_eq!(f.write(&root).unwrap(), WriteOutcome::Created);
        assert!(f.is_current(&root).unwrap());
    }
    assert_eq!(token.write(&root).unwrap(), WriteOutcome::Created);
    for f in &rendered {
        assert_eq!(
            f.write(&root).unwrap(),
            WriteOutcome::Unchanged,
            "{}",
            f.path.display()
        );
        let meta = std::fs::metadata(root.join(&f.path)).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            f.mode,
            "{}",
            f.path.display()
        );
    }
    assert_eq!(token.write(&root).unwrap(), WriteOutcome::Unchanged);
    let meta = std::fs::metadata(root.join(RKE2_TOKEN_DROPIN)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
}

/// Every output switched on (the example server with every cluster secret, which is also a
/// storage node), the example server and the example agent.
fn configs_covering_every_output() -> Vec<NodeConfig> {
    let mut full = config::parse(config::EXAMPLE_SERVER_WITH_SECRETS.as_bytes()).unwrap();
    full.data_disk = agent().data_disk;
    full.server_state_disk = Some(state_disk());
    vec![full, server(), agent()]
}

#[test]
fn every_rendered_file_is_owned_with_the_same_effect() {
    let owned = owned_files();
    let mut rendered_paths = std::collections::BTreeSet::new();
    for config in configs_covering_every_output() {
        for facts in [NOT_MOUNTED, MOUNTED] {
            for file in render(&config, &facts).unwrap() {
                let entry = owned.iter().find(|o| o.path == file.path);
                let entry = entry.unwrap_or_else(|| {
                    panic!(
                        "{} is rendered but not in owned_files()",
                        file.path.display()
                    )
                });
                assert_eq!(entry.effect, file.effect, "{}", file.path.display());
                rendered_paths.insert(file.path);
            }
        }
    }
    // Nothing is owned that no config renders: every owned name is a real output.
    for o in &owned {
        assert!(
            rendered_paths.contains(&o.path),
            "{} is owned but never rendered",
            o.path.display()
        );
    }
}

#[test]
fn owned_files_leave_the_token_and_secrets_to_their_steps_and_are_unique() {
    let owned = owned_files();
    let paths: std::collections::BTreeSet<_> = owned.iter().map(|o| &o.path).collect();
    assert_eq!(paths.len(), owned.len(), "no path is listed twice");
    assert!(!paths.contains(&PathBuf::from(RKE2_TOKEN_DROPIN)));
    for kind in secrets::SecretKind::ALL {
        assert!(!paths.contains(&kind.node_path()));
    }
    assert!(paths.contains(&PathBuf::from(
        "/etc/systemd/system/rke2-agent.service.d/10-canarie-data-disk.conf"
    )));
    assert!(paths.contains(&PathBuf::from(
        "/var/lib/rancher/rke2/server/manifests/canarie-gitrepo.yaml"
    )));
}

#[test]
fn config_files_and_manifests_are_split_by_directory() {
    let in_manifests = |p: &Path| p.starts_with(crate::paths::RKE2_MANIFESTS_DIR);
    for config in configs_covering_every_output() {
        let facts = MOUNTED;
        assert!(render_config_files(&config, &facts)
            .unwrap()
            .iter()
            .all(|f| !in_manifests(&f.path)));
        assert!(render_manifests(&config)
            .unwrap()
            .iter()
            .all(|f| in_manifests(&f.path)));
    }
    assert!(owned_config_files().iter().all(|f| !in_manifests(&f.path)));
    assert!(owned_manifests().iter().all(|f| in_manifests(&f.path)));
    assert!(render_manifests(&agent()).unwrap().is_empty());
}

#[test]
fn every_server_denies_pod_egress_to_imds_and_agents_get_no_manifests() {
    // Whatever the cluster has (no git_repo, no Fleet bundles), the server's manifests
    // carry the policy: nothing else keeps pods away from the node identity's tokens.
    let bare = with_json(SERVER_JSON, |v| {
        v["cluster"].as_object_mut().unwrap().remove("git_repo");
    });
    for config in [server(), bare] {
        let policy = manifest(&config, "canarie-deny-imds-egress.yaml");
        assert_eq!(
            policy["kind"],
            Value::from("CiliumClusterwideNetworkPolicy")
        );
        let spec = &policy["spec"];
        assert_eq!(spec["endpointSelector"], Value::Mapping(Default::default()));
        assert_eq!(
            spec["egressDeny"][0]["toCIDR"][0],
            Value::from("169.254.169.254/32")
        );
    }
    let agent_files = files(&agent(), &MOUNTED);
    assert!(
        !agent_files
            .keys()
            .any(|p| p.starts_with(crate::paths::RKE2_MANIFESTS_DIR)),
        "{agent_files:?}"
    );
}
