//! `canarie-agent disk inspect`.

use crate::cli::{exit, DiskInspectArgs, GlobalArgs};

pub fn inspect(_global: &GlobalArgs, _args: &DiskInspectArgs) -> i32 {
    eprintln!("canarie-agent: disk inspect is not built yet");
    exit::ERROR
}
