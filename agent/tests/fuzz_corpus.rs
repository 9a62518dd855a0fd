//! Replays every input kept under fuzz/corpus/<target>/ (seeds, and inputs that once
//! crashed a target) through the same property checks the fuzz targets run
//! (fuzz/src/checks.rs), so a fixed parser bug stays fixed without a fuzzer in the suite.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus")).join(target)
}

/// Runs `target`'s check on every file of its corpus; fails naming each input that panics.
fn replay(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target} in fuzz/src/checks.rs"))
        .1;
    let dir = corpus_dir(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 3,
        "{} holds {} inputs: keep the seeds",
        dir.display(),
        inputs.len()
    );
    let failures: Vec<String> = inputs
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&data))
                .err()
                .map(|panic| {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("{}: {why}", path.display())
                })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs break a property:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn every_target_has_a_corpus_folder() {
    let mut folders: Vec<String> = std::fs::read_dir(corpus_dir(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut targets: Vec<String> = checks::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    targets.sort();
    assert_eq!(folders, targets);
}

#[test]
fn config_parse_corpus() {
    replay("config_parse");
}

#[test]
fn user_data_corpus() {
    replay("user_data");
}

#[test]
fn imds_token_corpus() {
    replay("imds_token");
}

#[test]
fn instance_metadata_corpus() {
    replay("instance_metadata");
}

#[test]
fn keyvault_secret_corpus() {
    replay("keyvault_secret");
}

#[test]
fn keyvault_error_corpus() {
    replay("keyvault_error");
}
