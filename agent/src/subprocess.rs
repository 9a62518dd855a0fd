//! The programs the agent runs (mkfs.ext4, e2fsck, journalctl, ssh): one place that wires
//! their standard streams and reads what they print. Callers say what a program is for in
//! their own `.context()`; only the exit status and output come back from here.

use std::ffi::{OsStr, OsString};
use std::process::{Command, Output, Stdio};

/// A program, its arguments and how its standard streams are wired.
#[derive(Debug, Clone)]
pub struct Program {
    program: OsString,
    args: Vec<OsString>,
    interactive: bool,
    input: Option<Vec<u8>>,
}

impl Program {
    /// A program that reads nothing (standard input is /dev/null) and whose standard output
    /// and error are both captured.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Program {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            interactive: false,
            input: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Standard input and error stay the terminal's (ssh asks about host keys and prints
    /// its own errors there); only standard output is captured.
    pub fn interactive(mut self) -> Self {
        self.interactive = true;
        self
    }

    /// Standard input is `bytes` instead of /dev/null (sfdisk reads its script there).
    pub fn input(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.input = Some(bytes.into());
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdout(Stdio::piped());
        if self.interactive {
            cmd.stdin(Stdio::inherit()).stderr(Stdio::inherit());
        } else if self.input.is_some() {
            cmd.stdin(Stdio::piped()).stderr(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null()).stderr(Stdio::piped());
        }
        cmd
    }

    /// Runs the program to its end.
    pub fn output(&self) -> std::io::Result<Output> {
        let Some(input) = &self.input else {
            return self.command().output();
        };
        let mut child = self.command().spawn()?;
        // Small scripts only: written whole before the output is read.
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin.write_all(input)?;
        }
        child.wait_with_output()
    }

    /// Runs the program to its end on the async runtime. It is killed when the caller
    /// stops waiting (a doctor check cut by its deadline leaves no program behind).
    pub async fn output_async(&self) -> std::io::Result<Output> {
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.kill_on_drop(true);
        cmd.output().await
    }
}

/// The last non-empty line of what a program printed, for a one-line error.
pub fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(NO_OUTPUT)
        .trim()
        .to_string()
}

/// The last line of standard error, or of standard output when it printed no error.
pub fn last_line_of(output: &Output) -> String {
    match last_line(&output.stderr) {
        err if err == NO_OUTPUT => last_line(&output.stdout),
        err => err,
    }
}

const NO_OUTPUT: &str = "(no output)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_captured_and_the_last_line_found() {
        let out = Program::new("sh")
            .args(["-c", "echo one; echo two; echo >&2 oops; echo >&2"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(last_line(&out.stdout), "two");
        assert_eq!(last_line_of(&out), "oops");
        let quiet = Program::new("true").output().unwrap();
        assert_eq!(last_line_of(&quiet), "(no output)");
    }

    #[test]
    fn input_is_fed_to_standard_input() {
        let out = Program::new("cat").input("a script\n").output().unwrap();
        assert_eq!(out.stdout, b"a script\n");
    }

    #[tokio::test]
    async fn the_async_run_reads_nothing_from_stdin() {
        // `cat` ends at once on /dev/null instead of waiting for a terminal.
        let out = Program::new("cat").output_async().await.unwrap();
        assert!(out.status.success());
        assert!(out.stdout.is_empty());
    }
}
