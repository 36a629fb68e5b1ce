//! Fair use of SmartLead's rate limit, which counts an account's requests
//! all keys together.
//!
//! - [`KeyLimiter`]: a gateway key's own limit. A token bucket of `count`
//!   tokens refilled over `per`; past it the caller gets 429 at once, with
//!   the wait until the next token.
//! - [`AccountLimiter`]: what the whole account may send. A sliding window:
//!   no `per`-long stretch of time holds more than `count` requests sent,
//!   whatever SmartLead's own window is aligned to (with a small margin for
//!   the time requests take to get there). A request over the limit
//!   is held until its turn (a reserved send time), as long as that is
//!   within `max_wait` and fewer than `max_queue` are held; otherwise 429.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Rate;
use crate::metrics::Metrics;
use crate::sync::lock;

/// A gateway key's token bucket.
#[derive(Debug)]
pub struct KeyLimiter {
    rate: Rate,
    bucket: std::sync::Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl KeyLimiter {
    pub fn new(rate: Rate) -> KeyLimiter {
        KeyLimiter {
            rate,
            bucket: std::sync::Mutex::new(Bucket {
                tokens: f64::from(rate.count),
                at: Instant::now(),
            }),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token, or says how long until one is there.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let per_token = self.rate.per.as_secs_f64() / f64::from(self.rate.count);
        let capacity = f64::from(self.rate.count);
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() / per_token;
        b.tokens = (b.tokens + refill).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) * per_token))
        }
    }
}

/// An account's sliding window, with a bounded queue of held requests.
pub struct AccountLimiter {
    name: String,
    rate: Rate,
    max_wait: Duration,
    max_queue: usize,
    window: std::sync::Mutex<Window>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Window {
    /// Send times given out, oldest first; only the last `count` matter.
    sent: VecDeque<Instant>,
    /// Requests waiting for their send time.
    held: usize,
}

impl AccountLimiter {
    pub fn new(
        name: &str,
        rate: Rate,
        max_wait: Duration,
        max_queue: usize,
        metrics: Arc<Metrics>,
    ) -> AccountLimiter {
        AccountLimiter {
            name: name.to_string(),
            rate,
            max_wait,
            max_queue,
            window: Default::default(),
            metrics,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Waits for this request's turn; `Err(retry_after)` when the turn is
    /// further away than `max_wait` or the queue is full (nothing reserved).
    pub async fn acquire(&self) -> Result<(), Duration> {
        let (at, held) = {
            let mut w = lock(&self.window);
            let now = Instant::now();
            let count = self.rate.count as usize;
            // The earliest this request may go: `per` after the request
            // `count` places before it, and a margin for the time requests
            // take to reach SmartLead, which varies from one to the next.
            let at = match w.sent.len() {
                n if n >= count => (w.sent[n - count] + self.rate.per + margin(self.rate)).max(now),
                _ => now,
            };
            let wait = at - now;
            if wait > self.max_wait || (wait > Duration::ZERO && w.held >= self.max_queue) {
                self.metrics.record_rate_limited("account", &self.name);
                return Err(wait.max(Duration::from_secs(1)));
            }
            w.sent.push_back(at);
            while w.sent.len() > count {
                w.sent.pop_front();
            }
            let held = wait > Duration::ZERO;
            if held {
                w.held += 1;
                self.metrics.set_account_held(&self.name, w.held);
            }
            (at, held)
        };
        if held {
            self.metrics.record_account_held(&self.name);
            // Released even if the request is dropped while it waits (its
            // reserved send time stays spent, which only errs on the safe side).
            let _release = Held(self);
            tokio::time::sleep_until(at).await;
        }
        Ok(())
    }
}

impl std::fmt::Debug for AccountLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLimiter")
            .field("name", &self.name)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// Added to the account window, a twentieth of it (between 100 ms and 1 s).
/// SmartLead counts a request when it arrives, not when it was due: a held
/// request leaves when its timer fires, a few milliseconds after its reserved
/// time on a busy host (measured: 3-4 ms on 2 cores with 20 held), then
/// crosses the network, so without a margin SmartLead saw `count + 1`
/// requests within `per` and answered 429. A cold TLS connect slower than
/// the margin could still exceed it.
fn margin(rate: Rate) -> Duration {
    (rate.per / 20).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Counts a held request out of the queue when its wait ends.
struct Held<'a>(&'a AccountLimiter);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut w = lock(&self.0.window);
        w.held = w.held.saturating_sub(1);
        self.0.metrics.set_account_held(&self.0.name, w.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(secs),
        }
    }

    #[tokio::test]
    async fn a_key_gets_its_burst_then_waits_for_the_refill() {
        let l = KeyLimiter::new(rate(3, 60));
        for _ in 0..3 {
            l.try_acquire().unwrap();
        }
        let wait = l.try_acquire().unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        let fast = KeyLimiter::new(rate(2, 1));
        fast.try_acquire().unwrap();
        fast.try_acquire().unwrap();
        assert!(fast.try_acquire().is_err());
        tokio::time::sleep(Duration::from_millis(600)).await;
        fast.try_acquire().unwrap();
    }

    #[tokio::test]
    async fn an_account_never_sends_more_than_its_rate_in_any_window() {
        let limiter = Arc::new(AccountLimiter::new(
            "default",
            rate(5, 1),
            Duration::from_secs(10),
            100,
            Arc::new(Metrics::default()),
        ));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..13 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire().await.unwrap();
                Instant::now()
            }));
        }
        let mut sent = Vec::new();
        for t in tasks {
            sent.push(t.await.unwrap());
        }
        sent.sort();
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_window <= 5, "{in_window} sent within a second");
        }
        // Held, not refused: 13 requests at 5/s take two more seconds.
        assert!(sent[12] - start >= Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_next_window_starts_a_margin_after_the_last_so_a_late_send_stays_inside() {
        let limiter = AccountLimiter::new(
            "default",
            rate(2, 1),
            Duration::from_secs(10),
            100,
            Arc::new(Metrics::default()),
        );
        let start = Instant::now();
        limiter.acquire().await.unwrap();
        limiter.acquire().await.unwrap();
        limiter.acquire().await.unwrap();
        let took = Instant::now() - start;
        let due = Duration::from_secs(1) + margin(rate(2, 1));
        assert!(
            took >= due && took < due + Duration::from_millis(200),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn an_account_refuses_what_would_wait_too_long_or_overfill_the_queue() {
        let limiter = AccountLimiter::new(
            "default",
            rate(2, 10),
            Duration::from_secs(5),
            100,
            Arc::new(Metrics::default()),
        );
        limiter.acquire().await.unwrap();
        limiter.acquire().await.unwrap();
        let retry = limiter.acquire().await.unwrap_err();
        assert!(retry > Duration::from_secs(9), "{retry:?}");

        let small = Arc::new(AccountLimiter::new(
            "client-a",
            rate(1, 1),
            Duration::from_secs(60),
            2,
            Arc::new(Metrics::default()),
        ));
        small.acquire().await.unwrap();
        let held: Vec<_> = (0..2)
            .map(|_| {
                let l = small.clone();
                tokio::spawn(async move { l.acquire().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            small.acquire().await.is_err(),
            "a third held request is refused"
        );
        for h in held {
            h.await.unwrap().unwrap();
        }
    }
}
