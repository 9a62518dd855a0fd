//! A stand-in journald: the agent logs to the journal when `JOURNAL_STREAM` is set, through
//! tracing-journald, which sends datagrams to the fixed path /run/systemd/journal/socket.
//! The binary runs in a private mount namespace (`unshare --mount`) whose /run/systemd/journal
//! holds a link to a Unix datagram socket this test binds and reads, so the records are the
//! real datagrams, parsed as journald parses them (the native protocol,
//! https://systemd.io/JOURNAL_NATIVE_PROTOCOL/). Needs root, like the disk tests.

use super::sandbox::{Run, Sandbox};
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One journal entry: its fields in the order sent (a field may repeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record(pub Vec<(String, String)>);

impl Record {
    /// The first value of `field`.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }

    /// The entry as `journalctl -o export` would show it: `FIELD=value` lines.
    pub fn text(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// Parses one datagram of the native protocol: `FIELD=value\n` entries, or
/// `FIELD\n` + 64-bit little-endian length + bytes + `\n` for values that may hold newlines.
pub fn parse(datagram: &[u8]) -> Result<Record, String> {
    let mut fields = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|b| *b == b'\n').ok_or_else(|| {
            format!(
                "field without a newline: {:?}",
                String::from_utf8_lossy(rest)
            )
        })?;
        let line = &rest[..line_end];
        let (name, value, next) = if let Some(eq) = line.iter().position(|b| *b == b'=') {
            (&line[..eq], line[eq + 1..].to_vec(), &rest[line_end + 1..])
        } else {
            let after = &rest[line_end + 1..];
            let len: [u8; 8] = after
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or("binary field without its length")?;
            let len = usize::try_from(u64::from_le_bytes(len)).map_err(|e| e.to_string())?;
            let value = after
                .get(8..8 + len)
                .ok_or("binary field shorter than its length")?;
            if after.get(8 + len) != Some(&b'\n') {
                return Err("binary field not followed by a newline".to_string());
            }
            (line, value.to_vec(), &after[8 + len + 1..])
        };
        let name = std::str::from_utf8(name).map_err(|e| e.to_string())?;
        // journald drops fields whose names are not uppercase letters, digits and '_'.
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("invalid field name {name:?}"));
        }
        fields.push((
            name.to_string(),
            String::from_utf8_lossy(&value).into_owned(),
        ));
        rest = next;
    }
    Ok(Record(fields))
}

/// The socket the agent's records arrive at, read by a thread while the agent runs (a
/// datagram queue holds only a few hundred entries; a blocked sender would hang the agent).
pub struct Journal {
    dir: tempfile::TempDir,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Received {
    records: Vec<Record>,
    /// Empty datagrams: tracing-journald sends one when it connects, to check that the
    /// socket is there. A record too large for a datagram would arrive as an empty one
    /// with a file descriptor and show up here too.
    empty: usize,
    errors: Vec<String>,
}

/// What one run sent to the journal.
pub struct Sent {
    pub records: Vec<Record>,
    pub connects: usize,
}

impl Sent {
    /// All records as `FIELD=value` text, for the secrets sweep.
    pub fn text(&self) -> String {
        self.records.iter().map(Record::text).collect()
    }
}

impl Journal {
    pub fn start() -> Journal {
        let dir = tempfile::Builder::new()
            .prefix("canarie-journal-")
            .tempdir()
            .unwrap();
        let socket =
            UnixDatagram::bind(dir.path().join("socket")).expect("bind the journal socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match socket.recv(&mut buf) {
                        Ok(0) => received.lock().unwrap().empty += 1,
                        Ok(n) => {
                            let mut r = received.lock().unwrap();
                            match parse(&buf[..n]) {
                                Ok(record) => r.records.push(record),
                                Err(e) => r.errors.push(e),
                            }
                        }
                        // Nothing for 50 ms: done once the agent has exited.
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                        }
                        Err(e) => panic!("reading the journal socket: {e}"),
                    }
                }
            })
        };
        Journal {
            dir,
            received,
            stop,
            reader: Some(reader),
        }
    }

    /// `cmd` with `JOURNAL_STREAM` set, run where /run/systemd/journal/socket is this
    /// journal's socket. Its other environment is kept.
    pub fn command(&self, cmd: &Command) -> Command {
        namespaced(cmd, Some(&self.dir.path().join("socket")))
    }

    /// Stops reading (call it after the agent has exited) and returns what arrived; any
    /// datagram journald would reject fails the test.
    pub fn finish(mut self) -> Sent {
        self.stop.store(true, Ordering::SeqCst);
        self.reader
            .take()
            .unwrap()
            .join()
            .expect("the journal reader");
        let received = std::mem::take(&mut *self.received.lock().unwrap());
        assert!(
            received.errors.is_empty(),
            "datagrams journald would reject: {:?}",
            received.errors
        );
        Sent {
            records: received.records,
            connects: received.empty,
        }
    }
}

/// `cmd` with `JOURNAL_STREAM` set, in a mount namespace whose /run/systemd/journal holds
/// no socket at all (journald not running).
pub fn without_journald(cmd: &Command) -> Command {
    namespaced(cmd, None)
}

/// A private tmpfs over the deepest existing one of /run/systemd/journal, /run/systemd, /run
/// (only in the new namespace), then the socket link, then the command.
const SETUP: &str = r#"set -e
sock=$1; shift
for d in /run/systemd/journal /run/systemd /run; do [ -d "$d" ] && break; done
mount -t tmpfs -o mode=0755 canarie-test-journal "$d"
mkdir -p /run/systemd/journal
[ -z "$sock" ] || ln -s "$sock" /run/systemd/journal/socket
exec "$@"
"#;

fn namespaced(cmd: &Command, socket: Option<&std::path::Path>) -> Command {
    let mut wrapped = super::in_mount_namespace(SETUP);
    wrapped
        .arg(socket.map(|s| s.as_os_str()).unwrap_or_default())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    // What systemd sets for a service whose stderr is the journal (device:inode).
    wrapped.env("JOURNAL_STREAM", "0:0");
    wrapped
}

/// Runs `canarie-agent ARGS` in the sandbox with `JOURNAL_STREAM` set and a journal to send
/// to: what it printed, and what it sent to the journal.
pub async fn run(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> (Run, Sent) {
    let journal = Journal::start();
    let mut cmd = sb.command(args);
    cmd.envs(env.iter().copied());
    let run = Run::from_output(
        tokio::process::Command::from(journal.command(&cmd))
            .output()
            .await
            .expect("unshare runs the canarie-agent binary"),
    );
    (run, journal.finish())
}
