//! The server state disk and the node password across rebuilds: real loop devices, mkfs and
//! libblkid; `bootstrap` end to end in a `--root` sandbox (azure-sim, fake systemd). Root.

mod disk_support;
mod support;

use canarie_agent::disk::{self, DecisionKind, DiskAction, DiskSpec, Purpose};
use disk_support::{content_digest, sh_on, Lab, LinkScheme, GIB};
use serde_json::{json, Value};
use std::path::Path;
use support::sandbox::Sandbox;
use support::sim::{scenario, TestSim, SECRET};

const STATE_DIR: &str = "/var/lib/rancher/rke2/server";

fn state_spec(lun: u8) -> DiskSpec {
    DiskSpec {
        purpose: Purpose::ServerState,
        lun,
        device: None,
        mount_point: STATE_DIR.into(),
        label: "rke2-server".into(),
        min_size_gib: 1,
        wait_seconds: 0,
    }
}

#[test]
fn a_node_with_both_disks_formats_each_once_and_reuses_both_after_a_rebuild() {
    let mut lab = Lab::new();
    let (_, data_dev) = lab.disk("data.img", GIB, |_| {});
    let (_, state_dev) = lab.disk("state.img", GIB, |_| {});
    let first = lab.root("first");
    Lab::link_lun(&first, LinkScheme::ByLun, 0, &data_dev);
    Lab::link_lun(&first, LinkScheme::ByLun, 1, &state_dev);
    let (data, state) = (disk_support::config(0), state_spec(1));

    let mut uuids = Vec::new();
    for spec in [DiskSpec::from(&data), state.clone()] {
        let obs = disk::observe(&spec, &first).unwrap();
        assert_eq!(
            obs.decision.kind,
            DecisionKind::Format,
            "{:?}",
            obs.decision
        );
        let out = disk::apply(&obs, &spec, &first, &disk::Mounter::Syscall).unwrap();
        assert_eq!(out.action, DiskAction::Formatted);
        uuids.push(out.uuid);
    }
    assert_eq!(
        sh_on("blkid -p -s LABEL -o value {}", &state_dev).trim(),
        "rke2-server"
    );
    let unit = std::fs::read_to_string(
        first.join("/etc/systemd/system/var-lib-rancher-rke2-server.mount"),
    )
    .unwrap();
    assert!(
        unit.contains(&format!("What=/dev/disk/by-uuid/{}\n", uuids[1]))
            && unit.contains("Where=/var/lib/rancher/rke2/server\n")
            && unit.contains("Description=RKE2 server state disk"),
        "{unit}"
    );
    assert!(first
        .join("/etc/systemd/system/var-lib-longhorn.mount")
        .exists());
    // etcd's data, as RKE2 leaves it.
    let db = first.join(STATE_DIR).join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("member"), b"etcd data").unwrap();
    lab.unmount(&first.join(STATE_DIR));
    lab.unmount(&first.join("/var/lib/longhorn"));

    // A rebuilt VM: new OS disk, the same two managed disks at the same LUNs.
    let rebuilt = lab.root("rebuilt");
    Lab::link_lun(&rebuilt, LinkScheme::ByLun, 0, &data_dev);
    Lab::link_lun(&rebuilt, LinkScheme::ByLun, 1, &state_dev);
    for (spec, uuid) in [DiskSpec::from(&data), state].iter().zip(&uuids) {
        let obs = disk::observe(spec, &rebuilt).unwrap();
        assert_eq!(obs.decision.kind, DecisionKind::Reuse, "{:?}", obs.decision);
        let out = disk::apply(&obs, spec, &rebuilt, &disk::Mounter::Syscall).unwrap();
        assert_eq!((out.action, &out.uuid), (DiskAction::Reused, uuid));
    }
    assert_eq!(
        std::fs::read(rebuilt.join(STATE_DIR).join("db/member")).unwrap(),
        b"etcd data"
    );
    lab.unmount(&rebuilt.join(STATE_DIR));
    // e2fsck -p may touch the superblock's mount count, not the data.
    assert_eq!(
        sh_on("blkid -p -s UUID -o value {}", &state_dev).trim(),
        uuids[1]
    );
}

#[test]
fn swapped_luns_are_refused_and_left_untouched() {
    let mut lab = Lab::new();
    // The Longhorn disk sits where the state disk is expected.
    let (img, dev) = lab.disk("data.img", GIB, disk_support::mkfs_ours);
    let root = lab.root("node");
    Lab::link_lun(&root, LinkScheme::ByLun, 1, &dev);
    let before = content_digest(&img);
    let obs = disk::observe(state_spec(1), &root).unwrap();
    assert_eq!(obs.decision.kind, DecisionKind::Refuse);
    assert!(
        obs.decision.reason.contains("not the server state disk")
            && obs.decision.reason.contains("server_state_disk.lun"),
        "{}",
        obs.decision.reason
    );
    let err = disk::apply(&obs, state_spec(1), &root, &disk::Mounter::Syscall).unwrap_err();
    assert!(err.downcast_ref::<disk::Refused>().is_some(), "{err:#}");
    assert_eq!(content_digest(&img), before);
    assert!(!root.join(STATE_DIR).join("db").exists());
}

fn server_with_state_disk(device: &Path) -> Value {
    json!({
        "version": 1, "role": "server", "node_name": "cp-01",
        "cluster": {"tls_san": ["10.20.0.10"]},
        "join_token": {"vault": "kv-canarie", "secret": SECRET},
        "server_state_disk": {"lun": 1, "device": device, "wait_seconds": 0}
    })
}

fn worker_with_data_disk(device: &Path) -> Value {
    json!({
        "version": 1, "role": "agent", "node_name": "wk-01",
        "cluster": {"server_url": "https://10.20.0.10:9345"},
        "join_token": {"vault": "kv-canarie", "secret": SECRET},
        "data_disk": {"lun": 0, "device": device, "wait_seconds": 0}
    })
}

async fn sandbox(lab: &Lab, config: Value) -> Sandbox {
    let sim = TestSim::start(scenario(json!({ "user_data_json": config }))).await;
    Sandbox::with_sim_in(sim, lab.path("").as_path()).await
}

#[tokio::test]
async fn a_server_whose_state_disk_is_refused_never_starts_rke2() {
    let mut lab = Lab::new();
    let (img, dev) = lab.disk("state.img", GIB, |p| {
        sh_on("mkfs.xfs -q -f {}", p);
    });
    let before = content_digest(&img);
    let sb = sandbox(&lab, server_with_state_disk(&dev)).await;
    let run = sb.run(&["bootstrap"]).await;
    assert_eq!(run.code, 5, "{}\n{}", run.stdout, run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("canarie-agent: bootstrap failed in step server-state-disk:")
            && last.contains("RKE2 was not started"),
        "{last}"
    );
    assert!(
        sb.systemd.started().is_empty(),
        "{:?}",
        sb.systemd.started()
    );
    assert!(!sb.path("/etc/rancher/rke2/config.yaml").exists());
    assert!(!sb.path("/var/lib/rancher/rke2/server/manifests").exists());
    assert_eq!(content_digest(&img), before);
}

#[tokio::test]
async fn a_server_mounts_its_state_disk_before_writing_rke2s_files_and_keeps_its_password_there() {
    let mut lab = Lab::new();
    let (_, dev) = lab.disk("state.img", GIB, |_| {});
    let sb = sandbox(&lab, server_with_state_disk(&dev)).await;
    sb.run(&["bootstrap"]).await.assert_success();
    let state = sb.path(STATE_DIR);
    assert!(lab.is_mounted(&state));
    // The manifests went onto the state disk, not under it on the OS disk.
    use std::os::unix::fs::MetadataExt;
    let dev_of = |p: &Path| std::fs::metadata(p).unwrap().dev();
    assert_eq!(dev_of(&state.join("manifests")), dev_of(&state));
    assert_ne!(dev_of(&state), dev_of(&sb.path("/var/lib/rancher/rke2")));
    let dropin = std::fs::read_to_string(
        sb.path("/etc/systemd/system/rke2-server.service.d/10-canarie-server-state-disk.conf"),
    )
    .unwrap();
    assert!(dropin.contains("RequiresMountsFor=/var/lib/rancher/rke2/server\n"));
    let config = std::fs::read_to_string(sb.path("/etc/rancher/rke2/config.yaml")).unwrap();
    assert!(
        config.contains("etcd-snapshot-schedule-cron:")
            && config.contains("etcd-snapshot-retention:"),
        "{config}"
    );
    let local = std::fs::read(sb.path("/etc/rancher/node/password")).unwrap();
    let saved = std::fs::read(state.join(".canarie/node-password")).unwrap();
    assert_eq!(local, saved);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join(".canarie")), 0o700);
    assert_eq!(mode(&state.join(".canarie/node-password")), 0o600);
    assert_eq!(sb.systemd.started(), ["rke2-server.service"]);
    sb.assert_rerun_changes_nothing().await;
}

#[tokio::test]
async fn a_rebuilt_worker_presents_its_old_node_password() {
    let mut lab = Lab::new();
    let (_, dev) = lab.disk("data.img", GIB, |_| {});
    let first = sandbox(&lab, worker_with_data_disk(&dev)).await;
    first.run(&["bootstrap"]).await.assert_success();
    let password = std::fs::read(first.path("/etc/rancher/node/password")).unwrap();
    assert_eq!(password.len(), 33);
    lab.unmount(&first.path("/var/lib/longhorn"));

    // New VM, new OS disk, same name, same data disk.
    let rebuilt = sandbox(&lab, worker_with_data_disk(&dev)).await;
    assert!(!rebuilt.path("/etc/rancher/node/password").exists());
    let plan = rebuilt.run(&["bootstrap"]).await;
    plan.assert_success();
    assert!(
        plan.stdout.contains("restored from the data disk"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        std::fs::read(rebuilt.path("/etc/rancher/node/password")).unwrap(),
        password
    );
    plan.assert_no_secret();
    assert!(!plan
        .stdout
        .contains(std::str::from_utf8(&password).unwrap().trim()));
    assert!(!plan
        .stderr
        .contains(std::str::from_utf8(&password).unwrap().trim()));
}
