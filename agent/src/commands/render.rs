//! `canarie-agent render --config FILE --out DIR`.

use crate::cli::{exit, GlobalArgs};
use std::path::Path;

pub fn run(_global: &GlobalArgs, _config: &Path, _out: &Path) -> i32 {
    eprintln!("canarie-agent: render is not built yet");
    exit::ERROR
}
