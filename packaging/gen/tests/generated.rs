//! The generated man pages, completions and environment file cover the whole CLI.

use canarie_agent::cli::Cli;
use canarie_packaging_gen::{generate, man_pages, Layout, BIN};
use clap::CommandFactory;
use std::fs;

/// Every visible command path, e.g. ["canarie-agent", "disk", "inspect"].
fn command_paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_owned());
        out.push(path.clone());
        command_paths(sub, &path, out);
    }
}

fn all_paths() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    command_paths(&Cli::command(), &[BIN.to_owned()], &mut out);
    assert!(
        out.len() >= 8,
        "the CLI has bootstrap, plan, doctor, config validate/schema, disk inspect, render: {out:?}"
    );
    out
}

#[test]
fn every_command_gets_a_man_page_and_the_top_page_lists_files() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::debian(dir.path());
    let written = generate(&layout, Some("2026-01-02")).unwrap();

    let top = fs::read_to_string(layout.man1.join("canarie-agent.1")).unwrap();
    let title = top.lines().find(|l| l.starts_with(".TH ")).unwrap();
    assert!(
        title.starts_with(".TH canarie-agent 1 2026-01-02"),
        "{title}"
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
        ".SH FILES",
        ".SH \"SEE ALSO\"",
    ] {
        assert!(top.contains(section), "top page lacks {section}");
    }
    assert!(top.contains("/etc/canarie\\-agent/environment"), "{top}");
    assert!(
        top.contains("CANARIE_VAULT_URL"),
        "env vars are documented per option"
    );

    for path in all_paths() {
        let name = format!("{}.1", path.join("-"));
        let page = layout.man1.join(&name);
        assert!(written.contains(&page), "{name} not generated");
        let text = fs::read_to_string(&page).unwrap();
        assert!(text.contains(".SH SYNOPSIS"), "{name}: {text}");
        assert!(text.contains("canarie\\-agent"), "{name} names the binary");
    }
    assert!(!layout.man1.join("canarie-agent-help.1").exists());
}

#[test]
fn man_pages_are_the_same_for_the_same_date() {
    let cmd = {
        let mut c = Cli::command().disable_help_subcommand(true);
        c.build();
        c
    };
    assert_eq!(
        man_pages(&cmd, Some("2026-01-02")).unwrap(),
        man_pages(&cmd, Some("2026-01-02")).unwrap()
    );
}

#[test]
fn completions_know_every_subcommand_and_global_flag() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::debian(dir.path());
    generate(&layout, None).unwrap();
    let bash = fs::read_to_string(&layout.bash).unwrap();
    let zsh = fs::read_to_string(&layout.zsh).unwrap();
    let fish = fs::read_to_string(&layout.fish).unwrap();
    assert!(zsh.starts_with("#compdef canarie-agent"), "{zsh}");
    assert!(
        bash.lines()
            .any(|l| l.trim_start().starts_with("complete -F") && l.ends_with(" canarie-agent")),
        "{bash}"
    );
    assert!(fish.contains("complete -c canarie-agent"), "{fish}");
    for path in all_paths() {
        let leaf = path.last().unwrap();
        for (shell, text) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            assert!(
                text.contains(leaf.as_str()),
                "{shell} completion lacks {leaf}"
            );
        }
    }
    for flag in [
        "--vault-url",
        "--imds-url",
        "--root",
        "--config",
        "--rke2-start-timeout",
    ] {
        assert!(bash.contains(flag), "bash completion lacks {flag}");
        assert!(zsh.contains(flag), "zsh completion lacks {flag}");
        assert!(fish.contains(&flag[2..]), "fish completion lacks {flag}");
    }
}

#[test]
fn environment_file_lists_every_variable_commented_out() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::debian(dir.path());
    generate(&layout, None).unwrap();
    let text = fs::read_to_string(&layout.environment).unwrap();
    let envs: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    assert!(envs.len() >= 9, "{envs:?}");
    for env in &envs {
        assert!(
            text.contains(&format!("\n#{env}=")),
            "{env} missing:\n{text}"
        );
    }
    assert!(
        text.contains("#CANARIE_VAULT_DEADLINE=660\n"),
        "defaults shown:\n{text}"
    );
    assert!(
        text.contains("\n#CANARIE_LOG=info\n"),
        "the log filter:\n{text}"
    );
    // Nothing is set: systemd would see no assignment at all.
    for line in text.lines() {
        assert!(
            line.is_empty() || line.starts_with('#'),
            "active line {line:?}"
        );
    }
}
