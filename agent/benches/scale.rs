//! Fleet-scale simulation: N agents (default 500) run `bootstrap` at once, each in its own
//! `--root` sandbox without a data disk, against ONE azure-sim whose identity endpoint
//! answers 410 for the first seconds (IMDS booting) and whose vault throttles at a fixed
//! rate. Every agent is the real release binary in its own process, with the production
//! retry policies and deadlines, and its own fake systemd on a private bus (as every VM
//! has its own systemd).
//!
//! Reports: how many converged and when (p50/p90/last, from the simulator's start), the
//! statuses the simulator answered (410s, 429s), and the peak request rates from its request
//! log (most requests in any 1 s and any 10 s window, sliding). A benchmark, not a test:
//! nothing asserts a time. Figures go to docs/benchmarks.md; run it with
//! scripts/bench-scale.sh, which raises the open-file limit and passes the options:
//!
//!   --agents N        agents started at once (500)
//!   --limit N         vault requests admitted per window (4000, Azure's per-vault GET limit)
//!   --window S        the vault's window in seconds (10)
//!   --gone S          the identity endpoint answers 410 for the first S seconds (30)
//!   --no-jitter       run the agents with CANARIE_BENCH_NO_JITTER=1 (backoff without jitter)
//!   --deadline S      kill whatever still runs after S seconds (900)

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::dbus::FakeSystemd;
use support::sandbox::{agent_config, BIN};
use support::sim::{scenario, TestSim};

struct Options {
    agents: usize,
    limit: u64,
    window_s: u64,
    gone_s: u64,
    jitter: bool,
    deadline: Duration,
}

fn options() -> Options {
    let mut o = Options {
        agents: 500,
        limit: 4000,
        window_s: 10,
        gone_s: 30,
        jitter: true,
        deadline: Duration::from_secs(900),
    };
    // cargo bench passes `--bench`; everything else is ours.
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = args.next() {
        let mut num = |name: &str| -> u64 {
            let v = args
                .next()
                .unwrap_or_else(|| panic!("{name} needs a value"));
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v:?}"))
        };
        match arg.as_str() {
            "--agents" => o.agents = num("--agents") as usize,
            "--limit" => o.limit = num("--limit"),
            "--window" => o.window_s = num("--window"),
            "--gone" => o.gone_s = num("--gone"),
            "--deadline" => o.deadline = Duration::from_secs(num("--deadline")),
            "--no-jitter" => o.jitter = false,
            other => panic!("unknown option {other:?} (see agent/benches/scale.rs)"),
        }
    }
    o
}

/// One agent's run: when it ended (ms since the simulator started) and how.
struct Outcome {
    ended_ms: u64,
    code: Option<i32>,
}

/// Most events in any window of `width_ms` (sliding), over sorted arrival times.
fn peak(sorted_ms: &[u64], width_ms: u64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted_ms.len() {
        while sorted_ms[hi] - sorted_ms[lo] >= width_ms {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A node's root: a machine identity of its own, nothing else (no data disk, no state).
fn make_root(base: &Path, i: usize) -> PathBuf {
    let root = base.join(format!("node-{i:04}"));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/machine-id"),
        format!("{:032x}\n", 0xca0e_0000 + i),
    )
    .unwrap();
    root
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    let mut config = agent_config();
    // The production RBAC window would not matter here (no 403s); keep the default.
    config["join_token"]
        .as_object_mut()
        .unwrap()
        .remove("rbac_wait_seconds");
    // One systemd per node, as on real VMs: a shared fake would report the RKE2 unit
    // active to every agent after the first start. Started before the simulator, whose
    // rule clock (the 410 window) starts with it.
    let mut buses = Vec::with_capacity(o.agents);
    for _ in 0..o.agents {
        buses.push(FakeSystemd::start().await);
    }
    let sim = TestSim::start(scenario(json!({
        "user_data_json": config,
        "vault_rate_limit": {"requests": o.limit, "window_s": o.window_s},
        "rules": [{"preset": "imds_410", "endpoint": "token", "until_s": o.gone_s}],
    })))
    .await;
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    println!(
        "scale: {} agents, vault {} req/{} s, token endpoint 410 for {} s, jitter {}",
        o.agents,
        o.limit,
        o.window_s,
        o.gone_s,
        if o.jitter { "on" } else { "off" }
    );

    let mut runs = tokio::task::JoinSet::new();
    for (i, systemd) in buses.iter().enumerate() {
        let root = make_root(work.path(), i);
        let log = std::fs::File::create(logs.join(format!("node-{i:04}.log"))).unwrap();
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("bootstrap")
            .arg("--root")
            .arg(&root)
            .args(["--imds-url", &sim.sim.imds_url()])
            .args(["--vault-url", &sim.sim.vault_url()])
            .arg("--ca-file")
            .arg(&sim.ca_file)
            .args(["--dbus-address", &systemd.address])
            .env_remove("JOURNAL_STREAM")
            .env("CANARIE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        if !o.jitter {
            cmd.env("CANARIE_BENCH_NO_JITTER", "1");
        }
        let mut child = cmd.spawn().expect("spawning canarie-agent");
        let deadline = o.deadline;
        runs.spawn(async move {
            let code = match tokio::time::timeout(deadline, child.wait()).await {
                Ok(status) => status.ok().and_then(|s| s.code()),
                Err(_) => {
                    let _ = child.kill().await;
                    None
                }
            };
            Outcome {
                ended_ms: t0.elapsed().as_millis() as u64,
                code,
            }
        });
    }
    let spawned_ms = t0.elapsed().as_millis();
    let mut outcomes = Vec::with_capacity(o.agents);
    while let Some(r) = runs.join_next().await {
        outcomes.push(r.expect("agent task"));
    }

    let records = sim.sim.requests();
    let converged: Vec<u64> = {
        let mut v: Vec<u64> = outcomes
            .iter()
            .filter(|r| r.code == Some(0))
            .map(|r| r.ended_ms)
            .collect();
        v.sort_unstable();
        v
    };
    let failed = outcomes.len() - converged.len();
    let mut codes: Vec<String> = outcomes
        .iter()
        .filter(|r| r.code != Some(0))
        .map(|r| format!("{:?}", r.code))
        .collect();
    codes.dedup();
    let count =
        |f: &dyn Fn(&azure_sim::RequestRecord) -> bool| records.iter().filter(|r| f(r)).count();
    let arrivals = |f: &dyn Fn(&azure_sim::RequestRecord) -> bool| {
        let mut v: Vec<u64> = records
            .iter()
            .filter(|r| f(r))
            .map(|r| r.elapsed_ms)
            .collect();
        v.sort_unstable();
        v
    };
    let is_vault = |r: &azure_sim::RequestRecord| r.service == "vault" && r.has_authorization;
    let is_token = |r: &azure_sim::RequestRecord| r.path.contains("/identity/oauth2/token");
    let vault = arrivals(&is_vault);
    let token = arrivals(&is_token);
    let all = arrivals(&|_| true);

    println!("spawned all agents in {spawned_ms} ms");
    println!(
        "converged: {}/{} (failed: {failed} {})",
        converged.len(),
        o.agents,
        codes.join(" ")
    );
    println!(
        "time to converge (s since sim start): p50 {:.1}, p90 {:.1}, last {:.1}",
        percentile(&converged, 0.5) as f64 / 1000.0,
        percentile(&converged, 0.9) as f64 / 1000.0,
        converged.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "requests: {} in all; token {} ({} answered 410); vault {} ({} answered 429)",
        all.len(),
        token.len(),
        count(&|r| is_token(r) && r.status == 410),
        vault.len(),
        count(&|r| is_vault(r) && r.status == 429)
    );
    println!(
        "peak vault requests: {} in 1 s, {} in 10 s (limit {} per {} s)",
        peak(&vault, 1000),
        peak(&vault, 10_000),
        o.limit,
        o.window_s
    );
    println!(
        "peak token requests: {} in 1 s, {} in 10 s; peak of all requests: {} in 1 s",
        peak(&token, 1000),
        peak(&token, 10_000),
        peak(&all, 1000)
    );
    println!(
        "RKE2 units started: {}; bench wall time {:.1} s",
        buses.iter().map(|b| b.started().len()).sum::<usize>(),
        t0.elapsed().as_secs_f64()
    );
    if failed > 0 {
        // Keep the logs of failed agents to read; the sandboxes are otherwise removed.
        let keep = work.keep();
        println!(
            "logs of every agent kept in {}",
            keep.join("logs").display()
        );
    }
}
