//! The one retry loop used for IMDS and Key Vault: a total deadline, a per-attempt
//! timeout, jittered exponential backoff (backon) with a capped delay, `Retry-After`
//! honoured, and every failed attempt logged with its cause.

use backon::BackoffBuilder;
use std::future::Future;
use std::ops::RangeInclusive;
use std::time::Duration;
// tokio's clock, like the sleeps and timeouts below: one clock for the whole loop (and
// tests can pause it).
use tokio::time::Instant;

/// HTTP statuses IMDS answers while it is busy or booting (azure-protocol.md): 404 while
/// updating, 410 during boot, 429 rate limit, any 5xx. Everything else fails fast, except
/// the transient "Identity not found" 400, which the IMDS client handles by body.
pub const IMDS_RETRY_STATUSES: &[RangeInclusive<u16>] =
    &[404..=404, 410..=410, 429..=429, 500..=599];

/// IMDS statuses that are configuration errors: retrying cannot help.
pub const IMDS_FAIL_FAST_STATUSES: &[u16] = &[400, 401, 403, 405, 406, 413, 414];

/// Key Vault statuses worth retrying: timeouts, throttling and server errors. 403
/// `ForbiddenByRbac` is also retried, for a bounded window, by the Key Vault client.
pub const VAULT_RETRY_STATUSES: &[RangeInclusive<u16>] = &[408..=408, 429..=429, 500..=599];

/// Key Vault statuses that fail at once: wrong request, wrong token issuer, missing or
/// disabled secret, denied by an access policy.
pub const VAULT_FAIL_FAST_STATUSES: &[u16] = &[400, 401, 403, 404, 405, 409];

/// True when `status` is in one of `ranges`.
pub fn status_in(ranges: &[RangeInclusive<u16>], status: u16) -> bool {
    ranges.iter().any(|r| r.contains(&status))
}

/// Timing of one retried operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Give up when the next attempt could not start before this much time has passed.
    pub deadline: Duration,
    /// One attempt (connect, send, read the whole body) may take at most this long.
    pub attempt_timeout: Duration,
    /// First backoff delay; it doubles per attempt up to `max_delay`, plus up to 100% jitter.
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// IMDS: 410 during boot lasts up to 70 s, so the deadline leaves room for it twice.
    pub const IMDS: RetryPolicy = RetryPolicy {
        deadline: Duration::from_secs(180),
        attempt_timeout: Duration::from_secs(10),
        min_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(8),
    };

    /// Key Vault: the deadline must outlast the RBAC propagation window (10 min default).
    pub const VAULT: RetryPolicy = RetryPolicy {
        deadline: Duration::from_secs(660),
        attempt_timeout: Duration::from_secs(15),
        min_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(15),
    };

    /// The delays between attempts: `min_delay`, doubling up to `max_delay`, each plus a
    /// random 0-100%, so that a fleet retrying the same outage does not retry in lockstep.
    fn backoff(&self) -> impl Iterator<Item = Duration> {
        self.backoff_seeded(None)
    }

    /// [`RetryPolicy::backoff`], its jitter drawn from `seed` when given (tests), else
    /// from a random seed.
    fn backoff_seeded(&self, seed: Option<u64>) -> impl Iterator<Item = Duration> {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .without_max_times();
        if jitter_disabled() {
            return builder.build();
        }
        let builder = builder.with_jitter();
        match seed {
            Some(seed) => builder.with_jitter_seed(seed),
            None => builder,
        }
        .build()
    }
}

/// `CANARIE_BENCH_NO_JITTER=1` turns the jitter off. It exists only so the fleet-scale
/// benchmark (agent/benches/scale.rs, docs/benchmarks.md) can show what jitter buys: a
/// fleet that retries in lockstep hits Azure in waves. Never set it on a node.
fn jitter_disabled() -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DISABLED.get_or_init(|| {
        let disabled = std::env::var_os("CANARIE_BENCH_NO_JITTER").is_some_and(|v| v == "1");
        if disabled {
            tracing::warn!("CANARIE_BENCH_NO_JITTER=1: retries are not jittered (benchmarks only)");
        }
        disabled
    })
}

/// Why one attempt failed, and whether another attempt may succeed.
#[derive(Debug)]
pub enum AttemptError {
    /// Transient: try again (after `retry_after` if the server asked for it).
    Retry {
        error: anyhow::Error,
        retry_after: Option<Duration>,
    },
    /// Permanent: retrying cannot help.
    Fatal(anyhow::Error),
}

impl AttemptError {
    pub fn retry(error: anyhow::Error) -> Self {
        AttemptError::Retry {
            error,
            retry_after: None,
        }
    }
}

/// Runs `op` until it succeeds, fails fatally, or the deadline leaves no room for another
/// attempt. `what` names the operation in logs and errors ("IMDS token request").
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let start = Instant::now();
    let deadline = start + policy.deadline;
    let mut delays = policy.backoff();
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let per_attempt = policy.attempt_timeout.min(remaining);
        let outcome = match tokio::time::timeout(per_attempt, op()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AttemptError::retry(anyhow::anyhow!(
                "no complete answer within {:.1}s",
                per_attempt.as_secs_f64()
            ))),
        };
        let (error, retry_after) = match outcome {
            Ok(value) => {
                if attempt > 1 {
                    tracing::info!(
                        operation = what,
                        attempt,
                        elapsed_ms = start.elapsed().as_millis() as u64,
                        "succeeded after retries"
                    );
                }
                return Ok(value);
            }
            Err(AttemptError::Fatal(error)) => {
                tracing::error!(operation = what, attempt, error = %format!("{error:#}"), "failed, not retrying");
                return Err(error.context(format!("{what} failed")));
            }
            Err(AttemptError::Retry { error, retry_after }) => (error, retry_after),
        };
        let backoff = delays.next().unwrap_or(policy.max_delay);
        // Honour Retry-After, but never sleep past the deadline for it.
        let delay = retry_after.map_or(backoff, |ra| ra.max(backoff));
        let now = Instant::now();
        if now + delay >= deadline {
            tracing::error!(operation = what, attempt, error = %format!("{error:#}"), "giving up: deadline reached");
            return Err(error.context(format!(
                "{what} gave up after {attempt} attempts in {:.1}s (deadline {}s)",
                start.elapsed().as_secs_f64(),
                policy.deadline.as_secs()
            )));
        }
        tracing::warn!(
            operation = what,
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            error = %format!("{error:#}"),
            "attempt failed, retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    //! The async tests run on tokio's paused clock: the loop's sleeps and timeouts advance
    //! virtual time at once, so no test waits and none depends on the machine's speed.
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FAST: RetryPolicy = RetryPolicy {
        deadline: Duration::from_millis(400),
        attempt_timeout: Duration::from_millis(100),
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };

    /// The `n`-th delay without jitter: `min_delay` doubled `n` times, capped at `max_delay`.
    fn base_delay(policy: &RetryPolicy, n: usize) -> Duration {
        policy
            .min_delay
            .saturating_mul(1 << n.min(30))
            .min(policy.max_delay)
    }

    /// Fails unless every delay lies between its base and twice its base (`slack` more for
    /// the timer's millisecond rounding).
    fn assert_within_jitter_bounds(policy: &RetryPolicy, delays: &[Duration], slack: Duration) {
        for (n, delay) in delays.iter().enumerate() {
            let base = base_delay(policy, n);
            assert!(
                *delay >= base && *delay <= base * 2 + slack,
                "delay {n} is {delay:?}, outside [{base:?}, {:?}]: {delays:?}",
                base * 2
            );
        }
    }

    #[test]
    fn every_delay_is_its_exponential_base_plus_jitter_drawn_per_node() {
        for policy in [RetryPolicy::IMDS, RetryPolicy::VAULT] {
            let bases: Vec<Duration> = (0..12).map(|n| base_delay(&policy, n)).collect();
            let runs: Vec<Vec<Duration>> = [1, 2, 3]
                .iter()
                .map(|seed| policy.backoff_seeded(Some(*seed)).take(12).collect())
                .collect();
            for delays in &runs {
                assert_within_jitter_bounds(&policy, delays, Duration::ZERO);
                assert_ne!(
                    delays, &bases,
                    "no jitter: the delays are the bare schedule"
                );
            }
            // Nodes draw different jitter (the seed stands for the node): a constant
            // factor would not spread a fleet out.
            assert_ne!(runs[0], runs[1]);
            assert_ne!(runs[1], runs[2]);
            // The same seed gives the same delays: the draw is the only difference.
            let again: Vec<Duration> = policy.backoff_seeded(Some(1)).take(12).collect();
            assert_eq!(again, runs[0]);
        }
    }

    /// When each attempt of an operation that fails `failures` times and then succeeds
    /// started, as gaps between starts. Run under tokio's paused clock: the sleeps take
    /// no real time and the gaps are exactly what the loop waited.
    async fn gaps_between_attempts(policy: &RetryPolicy, failures: usize) -> Vec<Duration> {
        let starts = std::sync::Mutex::new(Vec::new());
        retry(policy, "op", || {
            let mut starts = starts.lock().unwrap();
            starts.push(Instant::now());
            let n = starts.len();
            async move {
                if n <= failures {
                    Err(AttemptError::retry(anyhow::anyhow!("HTTP 410")))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
        let starts = starts.into_inner().unwrap();
        assert_eq!(starts.len(), failures + 1);
        starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_waits_jittered_delays_that_differ_between_runs() {
        let policy = RetryPolicy::IMDS;
        let first = gaps_between_attempts(&policy, 6).await;
        let second = gaps_between_attempts(&policy, 6).await;
        for gaps in [&first, &second] {
            assert_within_jitter_bounds(&policy, gaps, Duration::from_millis(1));
        }
        // Two nodes hitting the same outage: unjittered, they would retry in lockstep.
        assert_ne!(first, second, "two runs waited the same delays: no jitter");
    }

    #[test]
    fn retry_and_fail_fast_lists_do_not_overlap() {
        for s in IMDS_FAIL_FAST_STATUSES {
            assert!(
                !status_in(IMDS_RETRY_STATUSES, *s),
                "IMDS {s} is in both lists"
            );
        }
        for s in VAULT_FAIL_FAST_STATUSES {
            assert!(
                !status_in(VAULT_RETRY_STATUSES, *s),
                "Key Vault {s} is in both lists"
            );
        }
        for s in [404, 410, 429, 500, 503, 599] {
            assert!(status_in(IMDS_RETRY_STATUSES, s));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success() {
        let calls = AtomicU32::new(0);
        let v = retry(&FAST, "op", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(AttemptError::retry(anyhow::anyhow!("busy")))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_stops_at_once() {
        let calls = AtomicU32::new(0);
        let err = retry(&FAST, "token request", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(AttemptError::Fatal(anyhow::anyhow!("HTTP 403")))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(format!("{err:#}"), "token request failed: HTTP 403");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_with_the_last_cause() {
        let err = retry(&FAST, "op", || async {
            Err::<(), _>(AttemptError::retry(anyhow::anyhow!("HTTP 410")))
        })
        .await
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("op gave up after"), "{msg}");
        assert!(msg.ends_with("HTTP 410"), "{msg}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_is_cut_by_the_attempt_timeout() {
        let calls = AtomicU32::new(0);
        let v = retry(&FAST, "op", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_the_deadline_gives_up_instead_of_sleeping() {
        let start = Instant::now();
        let err = retry(&FAST, "op", || async {
            Err::<(), _>(AttemptError::Retry {
                error: anyhow::anyhow!("HTTP 429"),
                retry_after: Some(Duration::from_secs(30)),
            })
        })
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("gave up after 1 attempts"));
        // It must not have slept the 30 s it was asked to (virtual time: the clock is paused
        // and jumps to each timer, so a sleep would show here in full).
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
