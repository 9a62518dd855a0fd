//! `canarie-agent kubeconfig DESTINATION --out FILE`: fetches the cluster-admin kubeconfig
//! ([`crate::kubeconfig`]), prints where it went and chooses the exit code.

use crate::cli::{exit, KubeconfigArgs};
use crate::fsutil::WriteOutcome;
use crate::kubeconfig::{self, REMOTE_KUBECONFIG};

/// Exit codes: 0 written, 1 the server's answer is not a kubeconfig or an argument is bad,
/// 2 ssh or the write failed.
pub fn run(args: &KubeconfigArgs) -> i32 {
    let host = match kubeconfig::destination_host(&args.destination) {
        Ok(h) => h,
        Err(e) => return fail(exit::FAILED, &e),
    };
    let api_host = args.api_server.as_deref().unwrap_or(host);
    let remote = match kubeconfig::fetch(&args.ssh, args.ssh_port, &args.destination) {
        Ok(bytes) => bytes,
        Err(e) => return fail(exit::ERROR, &e),
    };
    let rewritten = match kubeconfig::rewrite_servers(&remote, api_host) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                exit::FAILED,
                &e.context(format!(
                    "{REMOTE_KUBECONFIG} from {} is not usable",
                    args.destination
                )),
            )
        }
    };
    match kubeconfig::save(&args.out, &rewritten) {
        Ok((out, outcome)) => {
            let what = match outcome {
                WriteOutcome::Unchanged => "unchanged",
                WriteOutcome::Created => "written",
                WriteOutcome::Updated => "updated",
            };
            println!(
                "{} {what} (server {}): export KUBECONFIG={}",
                out.display(),
                rewritten.servers.join(", "),
                out.display()
            );
            exit::OK
        }
        Err(e) => fail(exit::ERROR, &e),
    }
}

fn fail(code: i32, e: &anyhow::Error) -> i32 {
    super::report_error("kubeconfig", e);
    code
}
