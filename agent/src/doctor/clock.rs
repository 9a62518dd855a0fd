//! `time-sync`: whether the clock is synchronized, and by which time service.
//!
//! The verdict comes from the kernel (adjtimex(2), read-only): every NTP/PTP daemon
//! (chrony, systemd-timesyncd, ntpd) disciplines the kernel clock through it, so one syscall
//! answers whichever daemon runs, without D-Bus, without a daemon to activate and without
//! parsing a daemon's output. It is also what `timedatectl` shows: systemd-timedated's
//! `NTPSynchronized` is this same reading. Asking timedated instead meant a bus-activated
//! service on the path (slow to start under emulation, absent on minimal images), which is
//! how the check used to end with "no result".
//!
//! Which service keeps the clock is systemd's answer: the state of the known time service
//! units over D-Bus. It names the service in the finding and picks the hint; it never
//! changes the verdict.

use super::{Options, Outcome};
use crate::systemd::{Systemd, UnitState};
use anyhow::Result;

/// The kernel's limit for the maximum error: at 16 s it declares the clock unsynchronized
/// (NTP_PHASE_LIMIT). systemd compares `maxerror` with it rather than trusting STA_UNSYNC,
/// which chrony sets on a synchronized clock to keep the kernel off the RTC (no `rtcsync`).
const MAX_ERROR_LIMIT_US: libc::c_long = 16_000_000;

/// Azure's host clock as a PTP device (Hyper-V): chrony's reference on Azure images.
const PTP_HYPERV: &str = "/dev/ptp_hyperv";

/// Why a skewed clock breaks a node, for every hint.
const SKEW: &str = "A skewed clock breaks the node: IMDS and Key Vault reject managed-identity tokens outside their validity window (so the join token and cluster secrets cannot be read), and TLS between nodes fails on certificate times";

/// A time service the check knows, by its units (first match wins, aliases included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Chrony,
    Timesyncd,
    Ntpd,
}

impl Service {
    /// Debian/Ubuntu name chrony `chrony.service`, RHEL/Azure Linux `chronyd.service`;
    /// ntpd comes as ntpsec, ntp or ntpd; OpenNTPD as openntpd.
    const UNITS: &'static [(&'static str, Service)] = &[
        ("chrony.service", Service::Chrony),
        ("chronyd.service", Service::Chrony),
        ("systemd-timesyncd.service", Service::Timesyncd),
        ("ntpsec.service", Service::Ntpd),
        ("ntp.service", Service::Ntpd),
        ("ntpd.service", Service::Ntpd),
        ("openntpd.service", Service::Ntpd),
    ];

    /// Where to look when this service runs but the clock is not synchronized.
    fn hint(self, unit: &str) -> String {
        match self {
            Service::Chrony => format!(
                "`chronyc tracking` and `chronyc sources -v` show chrony's sources and offset; on Azure its source is the host's PTP clock: /etc/chrony/chrony.conf (or /etc/chrony.conf) needs `refclock PHC {PTP_HYPERV} poll 3 dpoll -2 offset 0 stratum 2`, then `systemctl restart {unit}`"
            ),
            Service::Timesyncd => format!(
                "`timedatectl timesync-status` shows the NTP server and its answers: it needs outbound UDP 123 to its servers (/etc/systemd/timesyncd.conf); on Azure prefer chrony with the host's PTP clock {PTP_HYPERV}, which needs no network"
            ),
            Service::Ntpd => format!(
                "`ntpq -p` shows ntpd's peers: it needs outbound UDP 123; `systemctl status {unit}`"
            ),
        }
    }
}

/// The kernel clock's synchronization state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KernelClock {
    /// Upper bound of the clock's error, microseconds (grows 0.5 ms per second unless a
    /// daemon resets it).
    max_error_us: libc::c_long,
    /// The daemon's estimate of the error, microseconds.
    est_error_us: libc::c_long,
    /// STA_UNSYNC in the status word (reported, not trusted: see MAX_ERROR_LIMIT_US).
    unsync_flag: bool,
}

impl KernelClock {
    /// adjtimex(2) with no mode bits only reads, and needs no privilege.
    fn read() -> Result<KernelClock> {
        // SAFETY: timex is plain integers, for which all zeroes is valid, and modes 0 means
        // the kernel only writes the struct, which lives for the whole call.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::adjtimex(&mut tx) };
        if rc < 0 {
            return Err(anyhow::Error::from(std::io::Error::last_os_error())
                .context("adjtimex(2) (reading the kernel clock state)"));
        }
        Ok(KernelClock {
            max_error_us: tx.maxerror,
            est_error_us: tx.esterror,
            unsync_flag: tx.status & libc::STA_UNSYNC != 0,
        })
    }

    fn synchronized(&self) -> bool {
        self.max_error_us < MAX_ERROR_LIMIT_US
    }

    fn describe(&self) -> String {
        format!(
            "estimated error {}, maximum error {}{}",
            ms(self.est_error_us),
            ms(self.max_error_us),
            if self.unsync_flag {
                ", STA_UNSYNC set"
            } else {
                ""
            }
        )
    }
}

fn ms(us: libc::c_long) -> String {
    if us >= 1_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else {
        format!("{:.1} ms", us as f64 / 1e3)
    }
}

/// What systemd says about the time services: the most telling unit (active before
/// activating before failed), or none running; `Err` when systemd did not answer.
type Found = Result<Option<(&'static str, Service, UnitState)>, String>;

async fn find_service(opts: &Options) -> Found {
    let systemd = Systemd::connect(opts.cx.dbus_address.as_deref())
        .await
        .map_err(|e| format!("{e:#}"))?;
    let mut best: Option<(u8, &'static str, Service, UnitState)> = None;
    for &(unit, service) in Service::UNITS {
        // A unit this systemd does not know is not an error: it is simply not this one.
        let Ok(state) = systemd.unit_state(unit).await else {
            continue;
        };
        let rank = match state.active_state.as_str() {
            "active" | "reloading" => 3,
            "activating" => 2,
            "failed" => 1,
            _ => continue,
        };
        if best.as_ref().is_none_or(|b| rank > b.0) {
            best = Some((rank, unit, service, state));
        }
    }
    Ok(best.map(|(_, unit, service, state)| (unit, service, state)))
}

/// `time-sync`.
pub(super) async fn time_sync(opts: &Options) -> (Outcome, ()) {
    let (clock, found) = tokio::join!(super::blocking(KernelClock::read), find_service(opts));
    let ptp = opts.cx.root.join(PTP_HYPERV).exists();
    let outcome = match clock.and_then(|r| r) {
        Ok(clock) => judge(&clock, &found, ptp),
        Err(e) => Outcome::warn(
            format!("cannot read the kernel clock's state: {e:#}"),
            format!("`timedatectl` and `chronyc tracking` show it. {SKEW}"),
        ),
    };
    (outcome, ())
}

fn judge(clock: &KernelClock, found: &Found, ptp: bool) -> Outcome {
    let now = crate::reconcile::state::now_rfc3339();
    let by = match found {
        Ok(Some((unit, _, state))) => format!("{unit} is {state}"),
        Ok(None) => "no time service runs".to_string(),
        Err(e) => format!("which service keeps it is unknown: systemd did not answer ({e})"),
    };
    let ptp_note = if ptp {
        format!("; {PTP_HYPERV} (Azure's host clock) is present")
    } else {
        String::new()
    };
    if clock.synchronized() {
        return Outcome::ok(format!(
            "synchronized ({by}); {}; the time is {now}",
            clock.describe()
        ));
    }
    let finding = format!(
        "not synchronized: {by}; {}{ptp_note}; the time is {now}",
        clock.describe()
    );
    let hint = match found {
        Ok(Some((unit, service, state))) if state.is_active() => {
            format!(
                "{unit} runs but has not synchronized the clock (right after boot it takes a few seconds): {}. {SKEW}",
                service.hint(unit)
            )
        }
        Ok(Some((unit, service, _))) => format!(
            "{unit} is not running: `systemctl status {unit}` and `journalctl -u {unit} -b` say why; {}. {SKEW}",
            service.hint(unit)
        ),
        Ok(None) => format!(
            "no time service is configured: install and enable one. On Azure: `apt-get install chrony`, add `refclock PHC {PTP_HYPERV} poll 3 dpoll -2 offset 0 stratum 2` to /etc/chrony/chrony.conf, `systemctl enable --now chrony` (the host's PTP clock needs no network); elsewhere `timedatectl set-ntp true` (systemd-timesyncd). {SKEW}"
        ),
        Err(_) => format!(
            "`chronyc tracking` or `timedatectl timesync-status`, whichever service the image uses. {SKEW}"
        ),
    };
    Outcome::warn(finding, hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn clock(max_error_us: libc::c_long, unsync_flag: bool) -> KernelClock {
        KernelClock {
            max_error_us,
            est_error_us: 1500,
            unsync_flag,
        }
    }

    fn unit(active: &str) -> UnitState {
        UnitState {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: if active == "active" {
                "running"
            } else {
                "dead"
            }
            .into(),
            need_daemon_reload: false,
        }
    }

    #[test]
    fn the_verdict_is_the_kernels_maximum_error_not_sta_unsync() {
        let chrony: Found = Ok(Some(("chrony.service", Service::Chrony, unit("active"))));
        // chrony without rtcsync leaves STA_UNSYNC set on a synchronized clock.
        let o = judge(&clock(250_000, true), &chrony, true);
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.finding.starts_with("synchronized (chrony.service is active (running), loaded); estimated error 1.5 ms, maximum error 250.0 ms, STA_UNSYNC set"), "{}", o.finding);
        // The kernel's own limit: 16 s of maximum error is unsynchronized.
        let o = judge(&clock(MAX_ERROR_LIMIT_US, true), &chrony, true);
        assert_eq!(o.status, Status::Warn);
        assert!(o.finding.contains("maximum error 16.0 s"), "{}", o.finding);
        assert!(o
            .finding
            .contains("/dev/ptp_hyperv (Azure's host clock) is present"));
        let hint = o.hint.unwrap();
        assert!(hint.contains("chronyc tracking"), "{hint}");
        assert!(hint.contains("refclock PHC /dev/ptp_hyperv"), "{hint}");
        assert!(
            hint.contains("Key Vault reject managed-identity tokens"),
            "{hint}"
        );
    }

    #[test]
    fn each_service_and_none_get_their_own_hint() {
        let unsynced = clock(16_000_000, true);
        let timesyncd: Found = Ok(Some((
            "systemd-timesyncd.service",
            Service::Timesyncd,
            unit("active"),
        )));
        let o = judge(&unsynced, &timesyncd, false);
        assert!(o.hint.unwrap().contains("timedatectl timesync-status"));
        assert!(!o.finding.contains("ptp_hyperv"));

        let failed: Found = Ok(Some(("ntpsec.service", Service::Ntpd, unit("failed"))));
        let o = judge(&unsynced, &failed, false);
        assert!(
            o.finding.contains("ntpsec.service is failed"),
            "{}",
            o.finding
        );
        assert!(o.hint.unwrap().contains("ntpsec.service is not running"));

        let o = judge(&unsynced, &Ok(None), false);
        assert_eq!(o.status, Status::Warn);
        assert!(o
            .finding
            .starts_with("not synchronized: no time service runs"));
        let hint = o.hint.unwrap();
        assert!(hint.starts_with("no time service is configured"), "{hint}");
        assert!(hint.contains("tokens outside their validity window"));

        let o = judge(&unsynced, &Err("no bus".into()), false);
        assert!(o.finding.contains("systemd did not answer (no bus)"));
        assert!(o.hint.unwrap().contains("chronyc tracking"));

        // Synchronized by something systemd does not run (a container's host): still ok.
        assert_eq!(
            judge(&clock(1000, false), &Ok(None), false).status,
            Status::Ok
        );
    }

    #[test]
    fn the_kernel_clock_can_be_read_without_privilege() {
        let c = KernelClock::read().unwrap();
        assert!(c.max_error_us >= 0);
        assert_eq!(c.synchronized(), c.max_error_us < MAX_ERROR_LIMIT_US);
    }
}
