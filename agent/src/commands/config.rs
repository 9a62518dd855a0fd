//! `canarie-agent config validate FILE|-` and `config schema`.

use crate::cli::{exit, ConfigCommand, GlobalArgs};
use crate::config::{self, ConfigSource};
use std::io::Read;
use std::path::Path;

pub fn run(_global: &GlobalArgs, cmd: ConfigCommand) -> i32 {
    match cmd {
        ConfigCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config::schema()).expect("schema serializes")
            );
            exit::OK
        }
        ConfigCommand::Validate { file } => validate(&file),
    }
}

fn validate(file: &Path) -> i32 {
    let (source, bytes) = if file == Path::new("-") {
        let mut buf = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
            eprintln!("canarie-agent: cannot read the config from standard input: {e}");
            return exit::ERROR;
        }
        (ConfigSource::Stdin, buf)
    } else {
        match std::fs::read(file) {
            Ok(b) => (ConfigSource::File(file.to_path_buf()), b),
            Err(e) => {
                eprintln!(
                    "canarie-agent: cannot read config file {}: {e}",
                    file.display()
                );
                return exit::ERROR;
            }
        }
    };
    match super::parse_config(&bytes, &source) {
        Ok(c) => {
            println!(
                "config from {source} is valid: role {}, node {}",
                c.role,
                c.node_name.as_deref().unwrap_or("(hostname)")
            );
            exit::OK
        }
        Err(code) => code,
    }
}
