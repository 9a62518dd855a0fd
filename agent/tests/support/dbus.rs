//! A private `dbus-daemon` and a small fake of systemd's Manager on it: StartUnit with
//! JobRemoved signals, LoadUnit with unit state properties, Reload and Subscribe; and of
//! systemd-hostnamed (SetStaticHostname, StaticHostname).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

/// How the fake answers a start of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Done,
    Failed,
    /// The job never ends (a server waiting for its API, stuck).
    Hang,
}

/// systemd-hostnamed's static hostname, as a test sees it.
struct Hostname1 {
    state: Shared,
}

#[zbus::interface(name = "org.freedesktop.hostname1")]
impl Hostname1 {
    async fn set_static_hostname(&mut self, hostname: String, _interactive: bool) {
        let mut state = self.state.lock().unwrap();
        state.static_hostname = hostname;
        state.hostname_sets += 1;
    }

    #[zbus(property)]
    async fn static_hostname(&self) -> String {
        self.state.lock().unwrap().static_hostname.clone()
    }
}

#[derive(Debug, Default)]
pub struct FakeState {
    /// hostnamed's StaticHostname, and how many times it was set.
    pub static_hostname: String,
    pub hostname_sets: u32,
    pub outcomes: HashMap<String, StartOutcome>,
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub reloads: u32,
    /// Units whose files changed on disk since the last Reload (NeedDaemonReload).
    pub need_reload: std::collections::HashSet<String>,
    pub active: HashMap<String, String>,
}

pub type Shared = Arc<Mutex<FakeState>>;

struct Manager {
    state: Shared,
    next_job: u32,
}

fn unit_path(unit: &str) -> OwnedObjectPath {
    let escaped: String = unit
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect();
    ObjectPath::try_from(format!("/org/freedesktop/systemd1/unit/{escaped}"))
        .unwrap()
        .into()
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn start_unit(
        &mut self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.state.lock().unwrap().started.push(name.clone());
        self.queue_job(name, emitter).await
    }

    async fn restart_unit(
        &mut self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.state.lock().unwrap().restarted.push(name.clone());
        self.queue_job(name, emitter).await
    }

    async fn load_unit(
        &self,
        name: String,
        #[zbus(object_server)] server: &zbus::ObjectServer,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let path = unit_path(&name);
        if server.interface::<_, Unit>(&path).await.is_err() {
            server
                .at(
                    &path,
                    Unit {
                        name,
                        state: self.state.clone(),
                    },
                )
                .await?;
        }
        Ok(path)
    }

    async fn reload(&self) {
        let mut state = self.state.lock().unwrap();
        state.reloads += 1;
        state.need_reload.clear();
    }

    async fn subscribe(&self) {}

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

impl Manager {
    async fn queue_job(
        &mut self,
        name: String,
        emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.next_job += 1;
        let id = self.next_job;
        let job: OwnedObjectPath =
            ObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}"))
                .unwrap()
                .into();
        let outcome = self
            .state
            .lock()
            .unwrap()
            .outcomes
            .get(&name)
            .copied()
            .unwrap_or(StartOutcome::Done);
        // The unit's object is registered by LoadUnit, as systemd loads a unit before it
        // runs a job.
        let emitter = emitter.to_owned();
        let state = self.state.clone();
        let job2 = job.clone();
        tokio::spawn(async move {
            // Answer the call first, as systemd does, then end the job.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let result = match outcome {
                StartOutcome::Done => "done",
                StartOutcome::Failed => "failed",
                StartOutcome::Hang => return,
            };
            state.lock().unwrap().active.insert(
                name.clone(),
                if result == "done" { "active" } else { "failed" }.into(),
            );
            let _ = Manager::job_removed(&emitter, id, job2.as_ref(), &name, result).await;
        });
        Ok(job)
    }
}

struct Unit {
    name: String,
    state: Shared,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    async fn active_state(&self) -> String {
        self.state
            .lock()
            .unwrap()
            .active
            .get(&self.name)
            .cloned()
            .unwrap_or_else(|| "inactive".into())
    }
    #[zbus(property)]
    async fn sub_state(&self) -> String {
        match self.active_state().await.as_str() {
            "active" => "running".into(),
            "failed" => "failed".into(),
            _ => "dead".into(),
        }
    }
    #[zbus(property)]
    async fn load_state(&self) -> String {
        "loaded".into()
    }
    #[zbus(property)]
    async fn need_daemon_reload(&self) -> bool {
        self.state.lock().unwrap().need_reload.contains(&self.name)
    }
}

/// A running private bus with the fake Manager on it; stops both on drop.
pub struct FakeSystemd {
    pub address: String,
    pub state: Shared,
    daemon: Child,
    _conn: zbus::Connection,
    _dir: tempfile::TempDir,
}

impl FakeSystemd {
    pub async fn start() -> FakeSystemd {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}", dir.path().join("bus").display());
        let mut daemon = Command::new("dbus-daemon")
            .args([
                "--session",
                "--nofork",
                "--print-address=1",
                &format!("--address={address}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon must be installed (scripts/deps/apt.txt)");
        // The daemon prints its address once it listens.
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon said {line:?}");
        let state: Shared = Arc::default();
        let conn = zbus::connection::Builder::address(address.as_str())
            .unwrap()
            .name("org.freedesktop.systemd1")
            .unwrap()
            .serve_at(
                "/org/freedesktop/systemd1",
                Manager {
                    state: state.clone(),
                    next_job: 0,
                },
            )
            .unwrap()
            .name("org.freedesktop.hostname1")
            .unwrap()
            .serve_at(
                "/org/freedesktop/hostname1",
                Hostname1 {
                    state: state.clone(),
                },
            )
            .unwrap()
            .build()
            .await
            .unwrap();
        FakeSystemd {
            address,
            state,
            daemon,
            _conn: conn,
            _dir: dir,
        }
    }

    pub fn set_outcome(&self, unit: &str, outcome: StartOutcome) {
        self.state
            .lock()
            .unwrap()
            .outcomes
            .insert(unit.into(), outcome);
    }

    pub fn started(&self) -> Vec<String> {
        self.state.lock().unwrap().started.clone()
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
