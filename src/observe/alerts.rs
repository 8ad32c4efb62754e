//! Alerts of CONTRACT §12: chosen security events, and auth-failure
//! spikes, POSTed as JSON to a webhook.
//!
//! Raising an alert only queues it: one thread with its own small runtime
//! delivers the queue, so a slow, failing or hanging webhook never holds a
//! request. The queue keeps the newest 1,000; older ones are dropped and
//! counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus::IntCounter;
use serde::Serialize;

use super::security::SecurityEvent;
use crate::config::Alerts;

const QUEUE_ALERTS: usize = 1_000;
const TRIES: u32 = 3;
/// Waits before the second and third tries.
const BACKOFF: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];
const TRY_TIMEOUT: Duration = Duration::from_secs(5);

/// One alert, as POSTed.
#[derive(Debug, Serialize)]
struct Alert<'a> {
    ts: String,
    alert: &'a str,
    event: &'a str,
    summary: &'a str,
    client_ip: Option<String>,
    route: Option<&'a str>,
    subject: Option<&'a str>,
    count: u64,
}

struct Queued {
    url: Arc<str>,
    body: String,
}

struct Rules {
    url: Arc<str>,
    events: Vec<String>,
    per_minute: Option<u64>,
}

pub struct Alerter {
    rules: ArcSwapOption<Rules>,
    spike: Spike,
    queue: Arc<Queue>,
    /// Started on first alert (after any daemonizing fork).
    started: OnceLock<()>,
}

struct Queue {
    alerts: Mutex<VecDeque<Queued>>,
    ready: Condvar,
    sent: IntCounter,
    failed: IntCounter,
    dropped: IntCounter,
}

impl Alerter {
    pub fn new(sent: IntCounter, failed: IntCounter, dropped: IntCounter) -> Self {
        Alerter {
            rules: ArcSwapOption::empty(),
            spike: Spike::default(),
            queue: Arc::new(Queue {
                alerts: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
                sent,
                failed,
                dropped,
            }),
            started: OnceLock::new(),
        }
    }

    /// Takes a (re)loaded `[alerts]`; `None` turns alerts off. Queued alerts
    /// still go to the webhook they were raised for.
    pub fn configure(&self, alerts: Option<&Alerts>) {
        self.rules.store(alerts.map(|a| {
            Arc::new(Rules {
                url: a.webhook_url.as_str().into(),
                events: a.events.clone(),
                per_minute: a.auth_failure_spike,
            })
        }));
    }

    /// Raises the alerts `event` calls for.
    pub fn security_event(&self, event: &SecurityEvent<'_>) {
        let guard = self.rules.load();
        let Some(rules) = guard.as_ref() else {
            return;
        };
        if event.event == "auth_failure" {
            if let Some(limit) = rules.per_minute {
                if let Some(count) = self.spike.hit(limit, unix_minute()) {
                    let summary =
                        format!("{count} auth failures this minute, more than {limit} a minute");
                    self.raise(rules, event, "auth_failure_spike", &summary, count);
                }
            }
        }
        if rules.events.iter().any(|e| e == event.event) {
            self.raise(rules, event, event.event, &event.reason, 1);
        }
    }

    fn raise(
        &self,
        rules: &Rules,
        event: &SecurityEvent<'_>,
        alert: &str,
        summary: &str,
        count: u64,
    ) {
        let alert = Alert {
            ts: super::now_rfc3339(),
            alert,
            event: event.event,
            summary,
            client_ip: event.client_ip.map(|ip| ip.to_string()),
            route: event.route,
            subject: event.subject,
            count,
        };
        let Ok(body) = serde_json::to_string(&alert) else {
            return;
        };
        self.started.get_or_init(|| self.spawn());
        let queued = Queued {
            url: rules.url.clone(),
            body,
        };
        let mut alerts = match self.queue.alerts.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        alerts.push_back(queued);
        while alerts.len() > QUEUE_ALERTS {
            alerts.pop_front();
            self.queue.dropped.inc();
        }
        drop(alerts);
        self.queue.ready.notify_one();
    }

    fn spawn(&self) {
        let queue = self.queue.clone();
        let spawned = std::thread::Builder::new()
            .name("portcullis-alerts".into())
            .spawn(move || deliver(&queue));
        if let Err(e) = spawned {
            tracing::error!("cannot start the alert thread: {e}");
        }
    }
}

fn deliver(queue: &Queue) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the alert runtime: {e}");
            return;
        }
    };
    let client = reqwest::Client::builder()
        .timeout(TRY_TIMEOUT)
        .connect_timeout(TRY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    loop {
        let next = {
            let mut alerts = match queue.alerts.lock() {
                Ok(q) => q,
                Err(poisoned) => poisoned.into_inner(),
            };
            loop {
                if let Some(next) = alerts.pop_front() {
                    break next;
                }
                alerts = match queue.ready.wait(alerts) {
                    Ok(q) => q,
                    Err(poisoned) => poisoned.into_inner(),
                };
            }
        };
        if runtime.block_on(post(&client, &next)) {
            queue.sent.inc();
        } else {
            queue.failed.inc();
        }
    }
}

/// At most [`TRIES`] tries; `true` once the webhook answered 2xx. The URL
/// is never logged: webhooks often carry their credential in it.
async fn post(client: &reqwest::Client, alert: &Queued) -> bool {
    for attempt in 0..TRIES {
        if let Some(wait) = attempt.checked_sub(1).and_then(|i| BACKOFF.get(i as usize)) {
            tokio::time::sleep(*wait).await;
        }
        let sent = client
            .post(&*alert.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(alert.body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => tracing::warn!(
                status = r.status().as_u16(),
                "alert webhook refused an alert"
            ),
            Err(e) => tracing::warn!("alert webhook failed: {}", e.without_url()),
        }
    }
    false
}

/// Auth failures per wall-clock minute; one alert when a minute's count
/// passes the limit, and no other until a minute stays at or under it.
#[derive(Default)]
struct Spike {
    minute: AtomicU64,
    count: AtomicU64,
    spiking: AtomicBool,
}

impl Spike {
    /// Counts one failure; the count when this one starts a spike.
    fn hit(&self, limit: u64, minute: u64) -> Option<u64> {
        let current = self.minute.load(Ordering::Acquire);
        if current != minute
            && self
                .minute
                .compare_exchange(current, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let last = self.count.swap(0, Ordering::AcqRel);
            if minute != current.wrapping_add(1) || last <= limit {
                self.spiking.store(false, Ordering::Release);
            }
        }
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        (n > limit && !self.spiking.swap(true, Ordering::AcqRel)).then_some(n)
    }
}

fn unix_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_spike() {
        let spike = Spike::default();
        let hits = |minute: u64, n: usize| -> Vec<u64> {
            (0..n).filter_map(|_| spike.hit(3, minute)).collect()
        };
        assert_eq!(hits(10, 3), Vec::<u64>::new());
        assert_eq!(hits(10, 5), vec![4]);
        // Still over the limit the next minute: the same spike.
        assert_eq!(hits(11, 10), Vec::<u64>::new());
        // A quiet minute ends it.
        assert_eq!(hits(12, 2), Vec::<u64>::new());
        assert_eq!(hits(13, 5), vec![4]);
        // A gap of minutes ends it too.
        assert_eq!(hits(20, 4), vec![4]);
    }
}
