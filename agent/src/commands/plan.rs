use crate::cli::{exit, GlobalArgs};
pub fn run(_g: &GlobalArgs, _json: bool) -> i32 {
    exit::ERROR
}
