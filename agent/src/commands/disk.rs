//! `canarie-agent disk inspect DEVICE [--json]`: what the agent would do with a disk.
//! Read-only. Exit 0 for format/reuse/mounted, 1 for refuse, 2 when it cannot run.

use crate::cli::{exit, DiskInspectArgs, GlobalArgs};
use crate::disk::{self, DecisionKind, DiskObservation, InspectOptions, Signature};
use serde_json::json;

pub fn inspect(global: &GlobalArgs, args: &DiskInspectArgs) -> i32 {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "canarie-agent: disk inspect must run as root (it reads {} and checks whether the kernel holds it); run it with sudo",
            args.device.display()
        );
        return exit::ERROR;
    }
    let opts = InspectOptions {
        purpose: disk::Purpose::of_mount_point(&args.mount_point),
        label: args.label.clone(),
        min_size_gib: args.min_size_gib,
        mount_point: args.mount_point.clone(),
    };
    let obs = match disk::inspect(&args.device, &opts, &super::root(global)) {
        Ok(obs) => obs,
        Err(e) => {
            super::report_error(&format!("cannot inspect {}", args.device.display()), &e);
            return exit::ERROR;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&obs)).expect("JSON values serialize")
        );
    } else {
        print!("{}", to_text(&obs));
    }
    match obs.decision.kind {
        DecisionKind::Refuse => {
            eprintln!(
                "canarie-agent: refusing {}: {}",
                obs.device.display(),
                obs.decision.reason
            );
            exit::FAILED
        }
        DecisionKind::Format | DecisionKind::Reuse | DecisionKind::Mounted => exit::OK,
    }
}

fn signature_json(s: &Signature) -> serde_json::Value {
    json!({ "type": s.kind, "usage": s.usage, "offset": s.offset, "label": s.label })
}

fn to_json(obs: &DiskObservation) -> serde_json::Value {
    json!({
        "device": obs.device.display().to_string(),
        "decision": obs.decision.kind.as_str(),
        "reason": obs.decision.reason,
        "signatures": obs.signatures().iter().map(signature_json).collect::<Vec<_>>(),
    })
}

fn to_text(obs: &DiskObservation) -> String {
    let mut out = format!(
        "device:     {} ({} bytes)\ndecision:   {}\nreason:     {}\nsignatures:",
        obs.device.display(),
        obs.report.size_bytes,
        obs.decision.kind,
        obs.decision.reason
    );
    if obs.signatures().is_empty() {
        out.push_str(" none\n");
        return out;
    }
    out.push('\n');
    for s in obs.signatures() {
        let label = s
            .label
            .as_deref()
            .map(|l| format!("  label {l:?}"))
            .unwrap_or_default();
        let bad = if s.bad_checksum {
            "  (bad checksum)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {:<18} {:<16} offset {:#x}{label}{bad}\n",
            s.kind, s.usage, s.offset
        ));
    }
    out
}
