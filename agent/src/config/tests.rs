use super::*;
use serde_json::{json, Value};

fn server() -> Value {
    json!({
        "version": 1,
        "role": "server",
        "node_name": "cp-01",
        "cluster": {
            "tls_san": ["cp-01", "20.30.40.50"],
            "public_ip": "20.30.40.50",
            "storage_nodes": 2,
            "git_repo": {"url": "https://github.com/example/canarie", "branch": "main", "auth_secret": "canarie-kube-auth"}
        },
        "join_token": {"vault": "kv-canarie", "secret": "rke2-join-token"}
    })
}

fn agent() -> Value {
    json!({
        "version": 1,
        "role": "agent",
        "node_name": "wk-01",
        "cluster": {"server_url": "https://10.20.0.4:9345"},
        "join_token": {"vault": "kv-canarie", "secret": "rke2-join-token", "identity": {"client_id": "0000-1111"}},
        "data_disk": {"lun": 0},
        "node_labels": ["topology.kubernetes.io/zone=1"],
        "node_taints": ["dedicated=storage:NoSchedule"]
    })
}

fn parse_value(v: &Value) -> Result<NodeConfig, ConfigError> {
    parse(&serde_json::to_vec(v).unwrap())
}

/// Sets `path` (dotted, array indices allowed) in `doc` to `value`; `None` removes it.
fn with(mut doc: Value, path: &str, value: Option<Value>) -> Value {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = &mut doc;
    for p in &parts[..parts.len() - 1] {
        cur = &mut cur[*p];
    }
    let last = parts[parts.len() - 1];
    match value {
        Some(v) => cur[last] = v,
        None => {
            cur.as_object_mut().unwrap().remove(last);
        }
    }
    doc
}

#[test]
fn valid_examples_parse_with_defaults() {
    let s = parse_value(&server()).unwrap();
    assert_eq!(s.role, Role::Server);
    assert_eq!(s.join_token.rbac_wait_seconds, 600);
    assert!(s.cluster.server_url.is_none());

    let a = parse_value(&agent()).unwrap();
    let disk = a.data_disk.unwrap();
    assert_eq!(
        disk.mount_point,
        std::path::PathBuf::from("/var/lib/longhorn")
    );
    assert_eq!(disk.label, "longhorn");
    assert_eq!(disk.wait_seconds, 120);
    assert_eq!(
        a.join_token.identity,
        Some(Identity::ClientId("0000-1111".into()))
    );
}

#[test]
fn every_error_names_its_json_path() {
    // (document, expected path, a word the message must contain)
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with(server(), "colour", Some(json!("blue"))),
            "colour",
            "unknown field `colour`",
        ),
        (
            with(server(), "cluster.extra", Some(json!(1))),
            "cluster.extra",
            "unknown field `extra`",
        ),
        (
            with(server(), "join_token.secret", None),
            "join_token",
            "missing field `secret`",
        ),
        (
            with(server(), "role", Some(json!("worker"))),
            "role",
            "unknown variant `worker`",
        ),
        (
            with(server(), "version", Some(json!(2))),
            "version",
            "expected 1",
        ),
        (
            with(server(), "version", Some(json!("1"))),
            "version",
            "invalid type",
        ),
        (
            with(agent(), "cluster.server_url", None),
            "cluster.server_url",
            "required for role agent",
        ),
        (
            with(
                agent(),
                "cluster.server_url",
                Some(json!("http://10.0.0.4:9345")),
            ),
            "cluster.server_url",
            "https://",
        ),
        (
            with(server(), "cluster.public_ip", Some(json!("300.1.1.1"))),
            "cluster.public_ip",
            "IPv4",
        ),
        (
            with(server(), "cluster.tls_san", Some(json!(["ok", "bad name"]))),
            "cluster.tls_san[1]",
            "hostname",
        ),
        (
            with(server(), "cluster.storage_nodes", Some(json!(0))),
            "cluster.storage_nodes",
            "at least 1",
        ),
        (
            with(server(), "cluster.git_repo.url", Some(json!("ftp://x"))),
            "cluster.git_repo.url",
            "git URL",
        ),
        (
            with(server(), "cluster.git_repo.branch", None),
            "cluster.git_repo",
            "missing field `branch`",
        ),
        (
            with(
                with(
                    agent(),
                    "cluster.git_repo",
                    Some(json!({"url": "https://x/y", "branch": "main"})),
                ),
                "role",
                Some(json!("agent")),
            ),
            "cluster.git_repo",
            "only for role server",
        ),
        (
            with(server(), "join_token.vault", Some(json!("1bad"))),
            "join_token.vault",
            "Key Vault name",
        ),
        (
            with(server(), "join_token.secret", Some(json!("has_underscore"))),
            "join_token.secret",
            "secret name",
        ),
        (
            with(
                server(),
                "join_token.identity",
                Some(json!({"client_id": "a", "object_id": "b"})),
            ),
            "join_token.identity",
            "",
        ),
        (
            with(
                server(),
                "join_token.identity",
                Some(json!({"client_id": ""})),
            ),
            "join_token.identity.client_id",
            "empty",
        ),
        (
            with(agent(), "data_disk.lun", Some(json!(64))),
            "data_disk.lun",
            "0-63",
        ),
        (
            with(agent(), "data_disk.lun", Some(json!(-1))),
            "data_disk.lun",
            "invalid value",
        ),
        (
            with(
                agent(),
                "data_disk.mount_point",
                Some(json!("relative/dir")),
            ),
            "data_disk.mount_point",
            "absolute",
        ),
        (
            with(agent(), "data_disk.mount_point", Some(json!("/"))),
            "data_disk.mount_point",
            "dedicated",
        ),
        (
            with(
                agent(),
                "data_disk.mount_point",
                Some(json!("/mnt/longhorn")),
            ),
            "data_disk.mount_point",
            "is /mnt/longhorn, but cluster.longhorn_data_path is /var/lib/longhorn",
        ),
        (
            with(
                agent(),
                "cluster.longhorn_data_path",
                Some(json!("/mnt/longhorn")),
            ),
            "data_disk.mount_point",
            "replicas would land on the OS disk",
        ),
        (
            with(
                server(),
                "cluster.longhorn_data_path",
                Some(json!("longhorn")),
            ),
            "cluster.longhorn_data_path",
            "absolute",
        ),
        (
            with(server(), "cluster.longhorn_data_path", Some(json!("/var"))),
            "cluster.longhorn_data_path",
            "dedicated",
        ),
        (
            // `,` would split helm-controller's --set-string.
            with(
                server(),
                "cluster.longhorn_data_path",
                Some(json!("/srv/a,b")),
            ),
            "cluster.longhorn_data_path",
            "letters, digits and '/._-'",
        ),
        (
            with(agent(), "data_disk.device", Some(json!("/tmp/disk"))),
            "data_disk.device",
            "/dev",
        ),
        (
            with(
                agent(),
                "data_disk.label",
                Some(json!("a-label-that-is-too-long")),
            ),
            "data_disk.label",
            "1-16",
        ),
        (
            with(agent(), "data_disk.min_size_gib", Some(json!(0))),
            "data_disk.min_size_gib",
            "at least 1",
        ),
        (
            with(agent(), "server_state_disk", Some(json!({"lun": 1}))),
            "server_state_disk",
            "only for role server",
        ),
        (
            with(server(), "server_state_disk", Some(json!({"lun": 64}))),
            "server_state_disk.lun",
            "0-63",
        ),
        (
            with(
                server(),
                "server_state_disk",
                Some(json!({"lun": 1, "device": "/tmp/x"})),
            ),
            "server_state_disk.device",
            "/dev",
        ),
        (
            with(
                server(),
                "server_state_disk",
                Some(json!({"lun": 1, "label": ""})),
            ),
            "server_state_disk.label",
            "1-16",
        ),
        (
            with(
                server(),
                "server_state_disk",
                Some(json!({"lun": 1, "min_size_gib": 0})),
            ),
            "server_state_disk.min_size_gib",
            "at least 1",
        ),
        (
            with(
                server(),
                "server_state_disk",
                Some(json!({"lun": 1, "mount_point": "/srv"})),
            ),
            "server_state_disk.mount_point",
            "unknown field",
        ),
        (
            with(
                with(server(), "data_disk", Some(json!({"lun": 0}))),
                "server_state_disk",
                Some(json!({"lun": 0})),
            ),
            "server_state_disk",
            "same lun 0 as data_disk",
        ),
        (
            with(
                with(
                    server(),
                    "data_disk",
                    Some(json!({"lun": 0, "device": "/dev/sdc"})),
                ),
                "server_state_disk",
                Some(json!({"lun": 1, "device": "/dev/sdc"})),
            ),
            "server_state_disk",
            "same device /dev/sdc as data_disk",
        ),
        (
            with(
                with(server(), "data_disk", Some(json!({"lun": 0}))),
                "server_state_disk",
                Some(json!({"lun": 1, "label": "longhorn"})),
            ),
            "server_state_disk",
            "same label",
        ),
        (
            with(
                with(
                    with(
                        server(),
                        "cluster.longhorn_data_path",
                        Some(json!("/var/lib/rancher")),
                    ),
                    "data_disk",
                    Some(json!({"lun": 0, "mount_point": "/var/lib/rancher"})),
                ),
                "server_state_disk",
                Some(json!({"lun": 1})),
            ),
            "data_disk.mount_point",
            "overlaps RKE2's server state directory",
        ),
        (
            with(agent(), "etcd_snapshots", Some(json!({"retention": 5}))),
            "etcd_snapshots",
            "only for role server",
        ),
        (
            with(server(), "etcd_snapshots", Some(json!({"retention": 0}))),
            "etcd_snapshots.retention",
            "at least 1",
        ),
        (
            with(
                server(),
                "etcd_snapshots",
                Some(json!({"schedule_cron": "every hour"})),
            ),
            "etcd_snapshots.schedule_cron",
            "five-field cron",
        ),
        (
            with(agent(), "node_labels", Some(json!(["novalue"]))),
            "node_labels[0]",
            "key=value",
        ),
        (
            with(agent(), "node_taints", Some(json!(["k=v:Sometimes"]))),
            "node_taints[0]",
            "Effect",
        ),
        (
            with(agent(), "node_name", Some(json!("WK_01"))),
            "node_name",
            "not a valid name",
        ),
    ];
    for (doc, path, word) in cases {
        let err = parse_value(&doc).expect_err(&format!("accepted {doc}"));
        assert_eq!(err.path, path, "wrong path for {doc}: {err}");
        assert!(
            err.message.contains(word),
            "message {:?} lacks {word:?}",
            err.message
        );
    }
}

#[test]
fn a_server_may_carry_a_state_disk_and_a_data_disk() {
    let both = with(
        with(server(), "data_disk", Some(json!({"lun": 0}))),
        "server_state_disk",
        Some(json!({"lun": 1})),
    );
    let c = parse_value(&both).unwrap();
    let state = c.server_state_disk.unwrap();
    assert_eq!(
        (
            state.lun,
            state.label.as_str(),
            state.min_size_gib,
            state.wait_seconds
        ),
        (1, "rke2-server", 1, 120)
    );
    assert_eq!(c.data_disk.unwrap().lun, 0);
    let only_state = parse_value(&with(
        server(),
        "server_state_disk",
        Some(json!({"lun": 1, "device": "/dev/disk/azure/data/by-lun/1", "label": "etcd", "min_size_gib": 8, "wait_seconds": 30})),
    ))
    .unwrap();
    assert_eq!(only_state.server_state_disk.unwrap().label, "etcd");
    let snapshots = parse_value(&with(
        server(),
        "etcd_snapshots",
        Some(json!({"schedule_cron": "0 */6 * * *", "retention": 10})),
    ))
    .unwrap()
    .etcd_snapshots
    .unwrap();
    assert_eq!(snapshots.schedule_cron.as_deref(), Some("0 */6 * * *"));
    assert_eq!(snapshots.retention, Some(10));
}

#[test]
fn longhorn_data_path_defaults_to_the_mount_points_default_and_may_move_with_it() {
    let default = parse_value(&agent()).unwrap();
    assert_eq!(
        default.cluster.longhorn_data_path,
        default.data_disk.unwrap().mount_point
    );
    let moved = with(
        with(
            agent(),
            "cluster.longhorn_data_path",
            Some(json!("/srv/longhorn")),
        ),
        "data_disk.mount_point",
        Some(json!("/srv/longhorn/")),
    );
    let c = parse_value(&moved).expect("a matching non-default path is accepted");
    assert_eq!(
        c.cluster.longhorn_data_path,
        std::path::PathBuf::from("/srv/longhorn")
    );
    // Servers without a data disk only seed the path; there is nothing to compare.
    let server = parse_value(&with(
        server(),
        "cluster.longhorn_data_path",
        Some(json!("/srv/longhorn")),
    ))
    .unwrap();
    assert!(server.data_disk.is_none());
}

#[test]
fn not_json_is_an_error_at_the_root() {
    for bad in [&b"not json"[..], b"", b"[1,2]", b"{\"version\": 1"] {
        let err = parse(bad).unwrap_err();
        assert_eq!(err.path, ".", "{err}");
    }
}

#[test]
fn user_data_is_base64_json_within_the_imds_limit() {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let ok = b64(&serde_json::to_vec(&server()).unwrap());
    assert_eq!(
        parse_user_data(format!("{ok}\n").as_bytes()).unwrap().role,
        Role::Server
    );

    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"".to_vec(), "userData", "is empty"),
        (b"  \n".to_vec(), "userData", "is empty"),
        (b"%%%not-base64%%%".to_vec(), "userData", "not base64"),
        (b64(b"not json").into_bytes(), ".", "not valid JSON"),
        (b64(br#"{"version":1}"#).into_bytes(), ".", "missing field"),
        (
            b64(&vec![b' '; USER_DATA_MAX_BYTES + 1]).into_bytes(),
            "userData",
            "limit",
        ),
    ];
    for (input, path, word) in cases {
        let err = parse_user_data(&input).unwrap_err();
        assert_eq!(err.path, path, "{err}");
        assert!(err.message.contains(word), "{err}");
    }
}

#[test]
fn schema_describes_every_top_level_field_and_forbids_others() {
    let schema = schema();
    let props = schema["properties"].as_object().unwrap();
    for field in [
        "version",
        "role",
        "node_name",
        "cluster",
        "join_token",
        "data_disk",
        "server_state_disk",
        "etcd_snapshots",
        "node_labels",
        "node_taints",
    ] {
        assert!(props.contains_key(field), "schema lacks {field}");
    }
    assert_eq!(schema["additionalProperties"], json!(false));
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for field in ["version", "role", "cluster", "join_token"] {
        assert!(required.contains(&field), "{field} not required");
    }
    let state = &schema["$defs"]["ServerStateDiskConfig"];
    assert_eq!(state["required"], json!(["lun"]), "{state}");
    assert_eq!(
        state["properties"]["label"]["default"],
        json!("rke2-server")
    );
    assert_eq!(state["additionalProperties"], json!(false));
    let data_path = &schema["$defs"]["ClusterConfig"]["properties"]["longhorn_data_path"];
    assert_eq!(
        data_path["default"],
        json!("/var/lib/longhorn"),
        "{data_path}"
    );
    assert!(
        data_path["description"]
            .as_str()
            .is_some_and(|d| d.contains("data_disk.mount_point")),
        "{data_path}"
    );
}

#[test]
fn digest_is_stable_and_tracks_changes() {
    let a = parse_value(&server()).unwrap();
    let b = parse_value(&server()).unwrap();
    assert_eq!(digest(&a), digest(&b));
    let c = parse_value(&with(
        server(),
        "cluster.public_ip",
        Some(json!("20.30.40.51")),
    ))
    .unwrap();
    assert_ne!(digest(&a), digest(&c));
}
