//! Crash safety: a bootstrap killed (SIGKILL) at random points, then run again, ends in the
//! same state as an uninterrupted run; no disk is formatted again once a format completed;
//! no partial file is left. Real loop-device disk, azure-sim, fake systemd; needs root.

mod disk_support;
mod support;

use disk_support::{Lab, GIB};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::sandbox::Sandbox;
use support::sim::{scenario, TestSim, SECRET};

/// A `mkfs.ext4` first on PATH that logs each start (with the filesystem UUID the device
/// already holds, `-` for none) and each completed format, then runs the real one.
fn mkfs_shim(lab: &Lab) -> (PathBuf, PathBuf) {
    let bin = lab.path("shim");
    std::fs::create_dir_all(&bin).unwrap();
    let log = lab.path("mkfs.log");
    let real = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mkfs.ext4 is installed");
    let shim = bin.join("mkfs.ext4");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nfor dev; do :; done\nold=$(blkid -p -s UUID -o value \"$dev\" 2>/dev/null)\n\
             echo \"start ${{old:--}} $*\" >> '{log}'\n'{real}' \"$@\" || exit $?\necho \"done $*\" >> '{log}'\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (bin, log)
}

fn worker_config(device: &Path) -> serde_json::Value {
    json!({
        "version": 1, "role": "agent", "node_name": "wk-01",
        "cluster": {"server_url": "https://10.20.0.4:9345"},
        "join_token": {"vault": "kv-canarie", "secret": SECRET},
        "data_disk": {"lun": 0, "device": device, "wait_seconds": 0}
    })
}

fn uuid_of(device: &Path) -> String {
    disk_support::sh(&format!(
        "blkid -p -s UUID -o value '{}' || true",
        device.display()
    ))
    .trim()
    .to_string()
}

/// The node's files, with the disk's device name and UUID (if it has a disk) and run
/// timestamps taken out, and no temp files.
fn shadow_lock_temp(rel: &str) -> bool {
    ["etc/passwd.", "etc/group.", "etc/shadow.", "etc/gshadow."]
        .iter()
        .any(|f| {
            rel.strip_prefix(f)
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        })
}

fn end_state(sb: &Sandbox, device: Option<&Path>) -> BTreeMap<String, String> {
    let (uuid, device) = match device {
        Some(d) => (uuid_of(d), d.display().to_string()),
        None => ("<no disk>".to_string(), "<no disk>".to_string()),
    };
    let mut out = BTreeMap::new();
    for (path, bytes, mode, _) in sb.snapshot() {
        let rel = path.strip_prefix(sb.root()).unwrap().display().to_string();
        assert!(
            !rel.contains(".canarie-tmp"),
            "a temp file was left behind: {rel}"
        );
        if rel.starts_with("var/lib/longhorn/")
            || rel == "var/lib/canarie-agent/state.json"
            || rel == "var/lib/canarie-agent/metrics/canarie_agent.prom"
        {
            continue; // the filesystem's own files; timestamps and durations
        }
        // useradd/usermod keep the previous account files as `passwd-` etc.: which version
        // that is depends on how many of them ran, not on the end state.
        if ["etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-"].contains(&rel.as_str()) {
            continue;
        }
        // shadow-utils locks an account file by writing `FILE.<pid>` and linking it to
        // `FILE.lock`; a useradd killed between the two leaves the `<pid>` file. It is no
        // lock (the next useradd checks the PID in a lock and takes over a dead one's), and
        // shadow-utils, not the agent, writes it.
        if shadow_lock_temp(&rel) {
            continue;
        }
        if rel == "etc/rancher/node/password" {
            // Random per node; what must hold is that the disk keeps the same one.
            let saved = std::fs::read(sb.path("/var/lib/longhorn/.canarie/node-password"));
            let same = saved.is_ok_and(|s| s == bytes);
            out.insert(
                rel,
                format!("{mode:o} <password, saved on the disk: {same}>"),
            );
            continue;
        }
        let text = String::from_utf8_lossy(&bytes)
            .replace(&uuid, "<uuid>")
            .replace(&device, "<device>");
        out.insert(rel, format!("{mode:o} {text}"));
    }
    out
}

/// A small deterministic generator, so a failing run can be repeated from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// One to three bootstraps in a row, each killed (SIGKILL) at a random point of a run that
/// takes `full` uninterrupted. The whole process group is killed, mkfs included, as systemd
/// kills the unit's control group: an orphaned mkfs still writing while the next run probes
/// the disk is not a state a node can be in.
async fn kill_bootstraps(sb: &Sandbox, rng: &mut Rng, full: Duration, path_env: &str) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let kills = 1 + rng.next() % 3;
    for _ in 0..kills {
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 * 12 / 10 + 1));
        let mut child = tokio::process::Command::from(sb.command(&["bootstrap"]))
            .env("PATH", path_env)
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let group = Pid::from_raw(child.id().expect("a running child") as i32);
        tokio::time::sleep(delay).await;
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
        // The group's other members (mkfs, e2fsck) are gone before the next run starts
        // (bounded: a zombie nobody reaps still counts as a member).
        for _ in 0..1000 {
            if killpg(group, None).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn seed() -> u64 {
    let seed = std::env::var("CANARIE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash-safety seed {seed} (CANARIE_CRASH_SEED to repeat)");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_anywhere_then_rerun_equals_an_uninterrupted_run() {
    let mut lab = Lab::new();
    let (shim_dir, mkfs_log) = mkfs_shim(&lab);
    let path_env = format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // The reference: one uninterrupted bootstrap.
    let ref_dev = lab.attach(&lab.image("ref.img", 2 * GIB));
    let sim = TestSim::start(scenario(
        json!({ "user_data_json": worker_config(&ref_dev) }),
    ))
    .await;
    let reference = Sandbox::with_sim_in(sim, lab.path("").as_path()).await;
    let started = Instant::now();
    reference
        .run_with(&["bootstrap"], &[("PATH", &path_env)])
        .await
        .assert_success();
    let full = started.elapsed();
    let expected = end_state(&reference, Some(&ref_dev));

    let seed = seed();
    eprintln!("uninterrupted run {full:?}");
    let mut rng = Rng(seed);
    let iterations = 10;
    for i in 0..iterations {
        let dev = lab.attach(&lab.image(&format!("node{i}.img"), 2 * GIB));
        let sim = TestSim::start(scenario(json!({ "user_data_json": worker_config(&dev) }))).await;
        let sb = Sandbox::with_sim_in(sim, lab.path("").as_path()).await;
        std::fs::write(&mkfs_log, "").unwrap();
        kill_bootstraps(&sb, &mut rng, full, &path_env).await;
        let last = sb.run_with(&["bootstrap"], &[("PATH", &path_env)]).await;
        assert_eq!(
            last.code, 0,
            "iteration {i} (seed {seed}): the run after the kills failed:\n{}\n{}",
            last.stdout, last.stderr
        );
        let again = sb.run_with(&["bootstrap"], &[("PATH", &path_env)]).await;
        assert!(
            again.stdout.contains("converged, nothing changed"),
            "iteration {i}: not converged:\n{}",
            again.stdout
        );

        assert_eq!(
            end_state(&sb, Some(&dev)),
            expected,
            "iteration {i} (seed {seed}): end state differs"
        );
        let log = std::fs::read_to_string(&mkfs_log).unwrap();
        // A kill can land after mkfs finished but before the shim logged it: the format
        // completed unlogged, and the next run rightly reuses it. What must never happen is
        // mkfs starting on a disk that already holds a filesystem (mke2fs writes the primary
        // superblock last, so only a completed format shows a UUID).
        let completed = log.lines().filter(|l| l.starts_with("done")).count();
        assert!(
            completed <= 1 && log.lines().any(|l| l.starts_with("start")),
            "iteration {i} (seed {seed}): the disk was formatted {completed} times:\n{log}"
        );
        let over_a_filesystem: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("start") && !l.starts_with("start - "))
            .collect();
        assert!(
            over_a_filesystem.is_empty(),
            "iteration {i} (seed {seed}): mkfs ran over an existing filesystem:\n{log}"
        );
        let after_done = log
            .lines()
            .skip_while(|l| !l.starts_with("done"))
            .skip(1)
            .count();
        assert_eq!(
            after_done, 0,
            "iteration {i}: mkfs ran again after a completed format:\n{log}"
        );
        let _ = std::process::Command::new("umount")
            .arg(sb.path("/var/lib/longhorn"))
            .status();
    }
    let _ = std::process::Command::new("umount")
        .arg(reference.path("/var/lib/longhorn"))
        .status();
}

/// A config change on a running server, killed anywhere: the rerun ends with the new files
/// and RKE2 restarted for them, whether the kill fell before the write, between the write
/// and the restart (the next run still owes the restart), or after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_killed_anywhere_still_restarts_rke2() {
    let old = support::sandbox::server_config();
    let mut new = old.clone();
    new["cluster"]["tls_san"] = json!(["cp-01.example.com", "api.example.com"]);
    let converged_then_changed = || async {
        let sb = Sandbox::new(old.clone()).await;
        sb.run(&["bootstrap"]).await.assert_success();
        sb.set_config(&new);
        sb
    };

    let reference = converged_then_changed().await;
    let started = Instant::now();
    reference.run(&["bootstrap"]).await.assert_success();
    let full = started.elapsed();
    let expected = end_state(&reference, None);
    assert_eq!(
        reference.systemd.state.lock().unwrap().restarted,
        vec!["rke2-server.service"]
    );

    let seed = seed();
    let mut rng = Rng(seed);
    let path_env = std::env::var("PATH").unwrap_or_default();
    for i in 0..30 {
        let sb = converged_then_changed().await;
        kill_bootstraps(&sb, &mut rng, full, &path_env).await;
        sb.run(&["bootstrap"]).await.assert_success();
        sb.assert_rerun_changes_nothing().await;
        assert_eq!(
            end_state(&sb, None),
            expected,
            "iteration {i} (seed {seed}): end state differs"
        );
        let restarted = sb.systemd.state.lock().unwrap().restarted.clone();
        assert!(
            !restarted.is_empty(),
            "iteration {i} (seed {seed}): RKE2 was never restarted for the new config"
        );
    }
}
