//! `canarie-agent render --config FILE --out DIR`: every file the node would get, under DIR.
//!
//! The data disk counts as mounted when the config has one (the state a converged node is in),
//! and the join token drop-in holds a placeholder: render never talks to Azure.

use super::report_error;
use crate::cli::{exit, GlobalArgs};
use crate::config::ConfigSource;
use crate::paths::Root;
use crate::rke2::{self, NodeFacts};
use anyhow::Context;
use secrecy::SecretString;
use std::path::Path;

pub fn run(global: &GlobalArgs, out: &Path) -> i32 {
    // The global --config: render never reads IMDS userData.
    let Some(config_file) = global.config.as_deref() else {
        eprintln!("canarie-agent: render needs the node config: canarie-agent render --config FILE --out DIR");
        return exit::ERROR;
    };
    let bytes = match std::fs::read(config_file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "canarie-agent: cannot read config file {}: {e}",
                config_file.display()
            );
            return exit::ERROR;
        }
    };
    let source = ConfigSource::File(config_file.to_path_buf());
    let config = match super::parse_config(&bytes, &source) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let facts = NodeFacts {
        data_disk_mounted: config.data_disk.is_some(),
    };
    // Render everything before writing anything: a config the renderer refuses leaves DIR alone.
    let files = match rke2::render(&config, &facts) {
        Ok(f) => f,
        Err(e) => {
            report_error(&format!("cannot render {}", config_file.display()), &e);
            return exit::FAILED;
        }
    };
    let token = rke2::render_token_dropin(&SecretString::from(rke2::TOKEN_PLACEHOLDER));

    let root = Root::new(out);
    let result = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for f in &files {
            f.write(&root)?;
            println!("{}", root.join(&f.path).display());
        }
        token.write(&root)?;
        println!("{}", root.join(&token.path).display());
        Ok(())
    })();
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            report_error(&format!("cannot write under {}", out.display()), &e);
            exit::ERROR
        }
    }
}
