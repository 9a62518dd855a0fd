//! Bootstrap benchmark: a full sandbox bootstrap of a worker (loop-device data disk,
//! azure-sim over loopback, fake systemd on a private bus), against the same job done the
//! old cloud-init way by `cloud-init-style.sh`, side by side in one run.
//!
//! Reports per run: wall time; the agent's own CPU time (which excludes every wait on the
//! network and on mkfs) and peak RSS; CPU of everything each side ran (mkfs included).
//! Run as root: `cargo bench -p canarie-agent --bench bootstrap` (CANARIE_BENCH_RUNS=N).
//! Figures are written to docs/benchmarks.md by hand; nothing here asserts a time.

#[path = "../tests/disk_support/mod.rs"]
mod disk_support;
#[path = "../tests/support/mod.rs"]
mod support;

use disk_support::{Lab, GIB};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use support::sandbox::Sandbox;
use support::sim::{scenario, TestSim, SECRET};

/// What one process tree cost, from wait4(2).
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall: Duration,
    /// CPU of the process and every descendant it waited for.
    tree_cpu: Duration,
    /// The largest RSS of the process or any waited-for descendant, KiB.
    tree_max_rss_kib: u64,
}

// The child is reaped by wait4(2) below, which std's Child does not know about.
#[allow(clippy::zombie_processes)]
fn measure(mut cmd: Command) -> (Cost, String) {
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.expect("stdout");
    let mut stderr = child.stderr.expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet reaped; status and usage are valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    let wall = started.elapsed();
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed:\n{stdout}\n{stderr}"
    );
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (
        Cost {
            wall,
            tree_cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
            tree_max_rss_kib: usage.ru_maxrss as u64,
        },
        stdout,
    )
}

struct AgentRun {
    cost: Cost,
    own_cpu_ms: u64,
    own_max_rss_kib: u64,
    steps: Vec<(String, u64)>,
}

fn agent_bootstrap(sb: &Sandbox) -> AgentRun {
    let (cost, stdout) = measure(sb.command(&["bootstrap", "--json"]));
    let report: Value = serde_json::from_str(&stdout).expect("bootstrap --json prints the report");
    assert_eq!(report["converged"], true, "{report}");
    AgentRun {
        cost,
        own_cpu_ms: report["usage"]["cpu_ms"].as_u64().unwrap(),
        own_max_rss_kib: report["usage"]["max_rss_kib"].as_u64().unwrap(),
        steps: report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["duration_ms"].as_u64().unwrap(),
                )
            })
            .collect(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test --benches` run must not do the work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::var("CANARIE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/cloud-init-style.sh");
    let mut rows: Vec<[f64; 8]> = Vec::new();
    for run in 1..=runs {
        let mut lab = Lab::new();
        let agent_dev = lab.attach(&lab.image("agent.img", 2 * GIB));
        let script_dev = lab.attach(&lab.image("script.img", 2 * GIB));
        let config = json!({
            "version": 1, "role": "agent", "node_name": "wk-01",
            "cluster": {"server_url": "https://10.20.0.4:9345"},
            "join_token": {"vault": "kv-canarie", "secret": SECRET},
            "data_disk": {"lun": 0, "device": agent_dev, "wait_seconds": 0}
        });
        let (sb, first, again, old) = rt.block_on(async {
            let sim = TestSim::start(scenario(json!({ "user_data_json": config }))).await;
            // Inside the lab, so its drop unmounts the agent's mount even after a panic.
            let sb = Sandbox::with_sim_in(sim, &lab.path("")).await;
            let first = tokio::task::block_in_place(|| agent_bootstrap(&sb));
            let again = tokio::task::block_in_place(|| agent_bootstrap(&sb));
            let old_root = lab.root("old-root");
            let mut cmd = Command::new("bash");
            cmd.arg(script)
                .env("IMDS", sb.sim.sim.imds_url())
                .env("VAULT", sb.sim.sim.vault_url())
                .env("CA", &sb.sim.ca_file)
                .env("DEV", &script_dev)
                .env("ROOT", old_root.dir())
                .env("DBUS", &sb.systemd.address)
                .env("KV_SECRET", SECRET)
                .env("SERVER_URL", "https://10.20.0.4:9345");
            let (old, _) = tokio::task::block_in_place(|| measure(cmd));
            (sb, first, again, old)
        });
        // The agent's mount is under the sandbox root, outside the lab: unmount it here.
        let _ = Command::new("umount")
            .arg(sb.path("/var/lib/longhorn"))
            .status();
        drop(sb);
        println!(
            "run {run}: agent first boot {:.0} ms wall, {} ms own CPU, {} KiB peak RSS; converged reboot {:.0} ms wall, {} ms own CPU; cloud-init style {:.0} ms wall, {:.0} ms CPU; steps {:?}",
            ms(first.cost.wall), first.own_cpu_ms, first.own_max_rss_kib,
            ms(again.cost.wall), again.own_cpu_ms,
            ms(old.wall), ms(old.tree_cpu), first.steps
        );
        rows.push([
            ms(first.cost.wall),
            first.own_cpu_ms as f64,
            first.own_max_rss_kib as f64,
            ms(first.cost.tree_cpu),
            ms(again.cost.wall),
            again.own_cpu_ms as f64,
            ms(old.wall),
            ms(old.tree_cpu),
        ]);
        let _ = old.tree_max_rss_kib;
    }
    let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    println!("\nmedian of {runs} runs");
    println!("| | wall | agent's own CPU | agent's peak RSS | CPU incl. mkfs, curl… |");
    println!("|---|---|---|---|---|");
    println!("| canarie-agent, first boot (format + mount) | {:.0} ms | {:.0} ms | {:.1} MiB | {:.0} ms |", col(0), col(1), col(2) / 1024.0, col(3));
    println!(
        "| canarie-agent, converged reboot | {:.0} ms | {:.0} ms | | |",
        col(4),
        col(5)
    );
    println!(
        "| cloud-init-style shell script | {:.0} ms | | | {:.0} ms |",
        col(6),
        col(7)
    );
}
