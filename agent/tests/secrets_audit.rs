//! Secrets audit: every command, in its success and failure paths, run as the real binary
//! in a `--root` sandbox against azure-sim and a fake systemd, with a known join token (and
//! a rotated one) in the vault and the simulator's bearer tokens on the wire. Afterwards:
//! neither may appear in any output, log line (also at `CANARIE_LOG=trace`, which lets
//! reqwest, hyper, rustls and zbus log), journal record (the runs under `JOURNAL_STREAM`, as
//! systemd starts the agent), error, request record or file under the root, except the
//! current join token in the token drop-in, which must be mode 0600.

mod disk_support;
/// The simulator's own test client (a GET on its IMDS, trusting only its CA), shared rather
/// than written again here.
#[allow(dead_code)]
#[path = "../../vm-tests/azure-sim/tests/sim/support.rs"]
mod sim_client;
mod support;

use disk_support::{require_root, sh, Lab, GIB};
use serde_json::json;
use support::dbus::StartOutcome;
use support::journal;
use support::sandbox::{server_config, Run, Sandbox};
use support::sim::{rules, JOIN_TOKEN, SECRET};

const TOKEN_FILE: &str = "/etc/rancher/rke2/config.yaml.d/10-token.yaml";
/// The join token after a rotation; the old one must then be gone from the node entirely.
const ROTATED_TOKEN: &str = "K10-rotated-join-token-c4d2e8f06a";

/// What every run printed or sent to the journal, labelled, for the final sweep.
struct Audit {
    runs: Vec<(String, Run)>,
    journals: Vec<(String, journal::Sent)>,
}

impl Audit {
    /// Runs `canarie-agent ARGS` in the sandbox and keeps its output; checks the exit code
    /// so that each path really is the success or failure path it claims to be.
    async fn run(
        &mut self,
        sb: &Sandbox,
        args: &[&str],
        log: &str,
        expect: impl Fn(i32) -> bool,
    ) -> &Run {
        let run = sb.run_with(args, &[("CANARIE_LOG", log)]).await;
        let label = format!("canarie-agent {} (CANARIE_LOG={log})", args.join(" "));
        self.keep(label, run, expect)
    }

    /// [`Audit::run`] as systemd runs the agent: `JOURNAL_STREAM` set, the log records sent
    /// to a journal socket. Keeps what it printed and what it sent.
    async fn run_journal(
        &mut self,
        sb: &Sandbox,
        args: &[&str],
        log: &str,
        expect: impl Fn(i32) -> bool,
    ) {
        let (run, sent) = journal::run(sb, args, &[("CANARIE_LOG", log)]).await;
        let label = format!(
            "canarie-agent {} (CANARIE_LOG={log}, journal)",
            args.join(" ")
        );
        // At trace level the dependencies log too: a short journal would prove nothing.
        let least = if log == "trace" { 50 } else { 5 };
        assert!(
            sent.records.len() >= least,
            "{label} sent {} records to the journal",
            sent.records.len()
        );
        self.journals.push((label.clone(), sent));
        self.keep(label, run, expect);
    }

    /// Fails unless `run` exited as `expect` wants, then keeps it for the sweep.
    fn keep(&mut self, label: String, run: Run, expect: impl Fn(i32) -> bool) -> &Run {
        assert!(
            expect(run.code),
            "{label} exited {}\nstdout:\n{}\nstderr:\n{}",
            run.code,
            run.stdout,
            run.stderr
        );
        self.runs.push((label, run));
        &self.runs.last().unwrap().1
    }
}

/// The first segment of every bearer token the simulator issues (the JWT header, fixed per
/// simulator): a token that leaks anywhere leaks with it.
async fn bearer_marker(sb: &Sandbox) -> String {
    let token = sim_client::token(&sb.sim.sim).await;
    let header = token.split('.').next().unwrap();
    assert!(header.len() >= 20, "unexpected token shape");
    header.to_string()
}

fn assert_absent(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "secret {secret:?} found in {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_shows_a_secret_anywhere_but_the_token_file() {
    require_root();
    let mut lab = Lab::new();
    let sb = Sandbox::new(server_config()).await;
    let bearer = bearer_marker(&sb).await;
    let mut audit = Audit {
        runs: Vec::new(),
        journals: Vec::new(),
    };
    let ok = |c: i32| c == 0;

    // Success paths: plan, bootstrap, a converged re-run at trace level, doctor.
    audit.run(&sb, &["plan"], "info", ok).await;
    audit.run(&sb, &["plan", "--json"], "trace", ok).await;
    // The first bootstrap reports to the WireServer (Provisioning, then Ready): the reports
    // are in the request log swept below.
    let wireserver = sb.sim.sim.wireserver_url();
    audit
        .run(
            &sb,
            &["bootstrap", "--wireserver-url", &wireserver],
            "debug",
            ok,
        )
        .await;
    let trace = audit.run(&sb, &["bootstrap"], "trace", ok).await;
    // The trace run must really carry the dependencies' logs, or it proves nothing.
    assert!(
        trace.stderr.contains("TRACE") && trace.stderr.lines().count() > 50,
        "CANARIE_LOG=trace logged little:\n{}",
        trace.stderr
    );
    audit.run_journal(&sb, &["bootstrap"], "trace", ok).await;
    audit.run(&sb, &["doctor"], "trace", |_| true).await;
    audit
        .run(&sb, &["doctor", "--json"], "info", |_| true)
        .await;

    // render and config validate, with good and bad input.
    let inputs = sb.path("/audit-inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let good = inputs.join("server.json");
    std::fs::write(&good, server_config().to_string()).unwrap();
    let bad = inputs.join("bad.json");
    let mut bad_config = server_config();
    bad_config["join_token"]["vault"] = json!("not a vault!");
    std::fs::write(&bad, bad_config.to_string()).unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let out = sb.path("/audit-render");
    let out = out.to_str().unwrap();
    audit
        .run(
            &sb,
            &["render", "--config", good, "--out", out],
            "trace",
            ok,
        )
        .await;
    audit
        .run(
            &sb,
            &["render", "--config", bad, "--out", out],
            "info",
            |c| c != 0,
        )
        .await;
    audit
        .run(&sb, &["config", "validate", good], "info", ok)
        .await;
    audit
        .run(&sb, &["config", "validate", bad], "info", |c| c == 1)
        .await;
    audit.run(&sb, &["config", "schema"], "info", ok).await;

    // disk inspect: a blank loop device, one holding a foreign filesystem, and no device.
    let blank = lab.image("blank.img", GIB);
    let blank = lab.attach(&blank);
    let xfs = lab.image("xfs.img", GIB);
    sh(&format!("mkfs.xfs -q -L scratch '{}'", xfs.display()));
    let xfs = lab.attach(&xfs);
    for (dev, code) in [(blank.to_str().unwrap(), 0), (xfs.to_str().unwrap(), 1)] {
        audit
            .run(&sb, &["disk", "inspect", dev], "trace", |c| c == code)
            .await;
        audit
            .run(&sb, &["disk", "inspect", "--json", dev], "info", |c| {
                c == code
            })
            .await;
    }
    audit
        .run(
            &sb,
            &["disk", "inspect", "/dev/canarie-no-such-disk"],
            "trace",
            |c| c != 0,
        )
        .await;

    // Azure gone on a converged node: the local fallback reads the token file.
    sb.sim
        .sim
        .set_rules(rules(json!([{"preset": "imds_410", "times": 10000}])));
    audit.run(&sb, &["bootstrap"], "trace", ok).await;
    audit.run_journal(&sb, &["bootstrap"], "trace", ok).await;
    sb.sim.sim.set_rules(Vec::new());

    // A rotation whose RKE2 restart fails: the new token is written, the start step fails.
    sb.sim.sim.set_secret(SECRET, ROTATED_TOKEN);
    sb.systemd
        .set_outcome("rke2-server.service", StartOutcome::Failed);
    audit.run(&sb, &["bootstrap"], "trace", |c| c == 7).await;
    audit
        .run_journal(&sb, &["bootstrap"], "trace", |c| c == 7)
        .await;
    audit
        .run(&sb, &["doctor", "--json"], "trace", |_| true)
        .await;
    sb.systemd
        .set_outcome("rke2-server.service", StartOutcome::Done);
    audit.run(&sb, &["bootstrap"], "info", ok).await;

    // Bad userData: refused in step config.
    sb.sim
        .sim
        .set_user_data(Some("%%% not base64 %%%".to_string()));
    audit.run(&sb, &["bootstrap"], "trace", |c| c == 3).await;
    audit
        .run(&sb, &["plan", "--json"], "info", |c| c == 3)
        .await;

    // Failure paths with the bearer token in hand, on a first boot (no local fallback):
    // the secret disabled, the bearer token refused, the identity endpoint failing.
    let fresh = Sandbox::new(server_config()).await;
    fresh.sim.sim.set_secret_enabled(SECRET, false);
    // A refused first boot reports ProvisioningFailed with its error chain and hint.
    let fresh_wireserver = fresh.sim.sim.wireserver_url();
    audit
        .run(
            &fresh,
            &["bootstrap", "--wireserver-url", &fresh_wireserver],
            "trace",
            |c| c == 4,
        )
        .await;
    audit
        .run_journal(&fresh, &["bootstrap"], "trace", |c| c == 4)
        .await;
    audit.run(&fresh, &["plan"], "debug", |c| c == 4).await;
    audit.run(&fresh, &["doctor"], "trace", |_| true).await;
    fresh.sim.sim.set_secret_enabled(SECRET, true);
    fresh.sim.sim.set_rules(rules(
        json!([{"preset": "kv_401_invalid_issuer", "times": 1}]),
    ));
    audit.run(&fresh, &["bootstrap"], "trace", |c| c == 4).await;
    fresh
        .sim
        .sim
        .set_rules(rules(json!([{"preset": "token_500", "times": 1000}])));
    audit.run(&fresh, &["plan"], "trace", |c| c == 4).await;
    audit
        .run_journal(&fresh, &["plan"], "trace", |c| c == 4)
        .await;

    // Nothing printed or sent to the journal a secret.
    let all_secrets = [JOIN_TOKEN, ROTATED_TOKEN, bearer.as_str()];
    for (label, run) in &audit.runs {
        assert_absent(&format!("stdout of {label}"), &run.stdout, &all_secrets);
        assert_absent(&format!("stderr of {label}"), &run.stderr, &all_secrets);
    }
    for (label, sent) in &audit.journals {
        assert_absent(
            &format!("the journal of {label}"),
            &sent.text(),
            &all_secrets,
        );
    }
    // Nor did the simulator record one, health reports to its WireServer included.
    assert!(sb
        .sim
        .sim
        .health_reports()
        .iter()
        .any(|h| h.state == "Ready"));
    assert!(fresh
        .sim
        .sim
        .health_reports()
        .iter()
        .any(|h| h.sub_status.as_deref() == Some("ProvisioningFailed")));
    for sim in [&sb.sim.sim, &fresh.sim.sim] {
        let records = serde_json::to_string(&sim.requests()).unwrap();
        assert_absent("the request log", &records, &all_secrets);
    }
    assert_only_in_token_file(&sb, Some(ROTATED_TOKEN), &all_secrets);
    assert_only_in_token_file(&fresh, None, &all_secrets);
    drop(lab);
}

/// Every file under the sandbox's root: only the token drop-in holds a join token (the
/// `current` one, mode 0600; none on a node that never got one); no file or path holds any
/// other secret.
fn assert_only_in_token_file(sb: &Sandbox, current: Option<&str>, all_secrets: &[&str]) {
    let token_file = sb.path(TOKEN_FILE);
    let files = sb.snapshot();
    // A converged node has its config, manifests and state; a refused first boot, its state.
    let least = if current.is_some() { 10 } else { 2 };
    let paths: Vec<_> = files.iter().map(|f| f.0.display().to_string()).collect();
    assert!(paths.len() >= least, "the runs wrote few files: {paths:?}");
    // The metrics file is among the files swept (node-exporter publishes it cluster-wide).
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("metrics/canarie_agent.prom")),
        "no metrics file: {paths:?}"
    );
    let mut seen_token_file = false;
    for (path, bytes, mode, _) in files {
        let text = String::from_utf8_lossy(&bytes);
        let name = path.display().to_string();
        assert_absent(&format!("the path {name}"), &name, all_secrets);
        match current {
            Some(current) if path == token_file => {
                seen_token_file = true;
                assert_eq!(mode & 0o777, 0o600, "{name} has mode {:o}", mode & 0o777);
                assert!(text.contains(current), "{name} lacks the current token");
                let others: Vec<&str> = all_secrets
                    .iter()
                    .copied()
                    .filter(|s| *s != current)
                    .collect();
                assert_absent(&name, &text, &others);
            }
            _ => assert_absent(&format!("the file {name}"), &text, all_secrets),
        }
    }
    assert_eq!(
        seen_token_file,
        current.is_some(),
        "token file {} expected: {}",
        token_file.display(),
        current.is_some()
    );
}
