//! Task state reports (`SubmitTaskStateChange`): queued per task and sent in order, each
//! retried with a bounded back-off until the control plane accepts it. Tasks do not wait for
//! each other: one report in flight per task, any number of tasks at once.
//!
//! A report the control plane rejects as a client fault (`InvalidParameterException`,
//! `ClientException`, ...: the task is unknown, the transition invalid) is dropped, since
//! sending it again cannot succeed and would hold back the task's later reports.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use berth_aws::client::ClientError;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::control::ControlClient;
use crate::state::TaskStatus;

/// First retry delay; doubled per failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Called once the control plane accepted a report.
pub type AckFn = Box<dyn FnOnce(&Report) + Send>;

/// One `SubmitTaskStateChange` input.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub task_arn: String,
    pub status: TaskStatus,
    pub body: Value,
}

struct Entry {
    report: Report,
    on_ack: Option<AckFn>,
}

/// What became of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// Rejected for good: dropped.
    Rejected,
    /// Failed for now: retried after a back-off.
    Retry,
}

/// How a failed send is handled.
pub fn classify(e: &ClientError) -> Outcome {
    if e.is_retryable() {
        return Outcome::Retry;
    }
    match e.code() {
        Some(
            "InvalidParameterException"
            | "ClientException"
            | "ClusterNotFoundException"
            | "SerializationException"
            | "ValidationException",
        ) => Outcome::Rejected,
        // Signature and permission problems may be fixed by the operator: keep trying.
        _ => Outcome::Retry,
    }
}

/// The delay before attempt `failures + 1` (without jitter).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (MIN_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

#[derive(Default)]
struct TaskQueue {
    items: VecDeque<Entry>,
    failures: u32,
    next_try: Option<Instant>,
    in_flight: bool,
}

/// The per-task queues (no I/O, time passed in).
#[derive(Default)]
pub struct ReportQueue {
    tasks: HashMap<String, TaskQueue>,
}

impl ReportQueue {
    pub fn new() -> ReportQueue {
        ReportQueue::default()
    }

    fn push(&mut self, entry: Entry) {
        self.tasks
            .entry(entry.report.task_arn.clone())
            .or_default()
            .items
            .push_back(entry);
    }

    /// Queues a report (tests).
    pub fn push_report(&mut self, report: Report) {
        self.push(Entry {
            report,
            on_ack: None,
        });
    }

    /// The head report of every task that is due and has none in flight (now marked in flight).
    pub fn take_ready(&mut self, now: Instant) -> Vec<Report> {
        let mut out: Vec<Report> = Vec::new();
        for q in self.tasks.values_mut() {
            if q.in_flight || q.next_try.is_some_and(|t| t > now) {
                continue;
            }
            if let Some(head) = q.items.front() {
                q.in_flight = true;
                out.push(head.report.clone());
            }
        }
        out.sort_by(|a, b| a.task_arn.cmp(&b.task_arn));
        out
    }

    /// Records the outcome of the send of `task_arn`'s head report; `delay` is used on retry.
    /// Returns the finished entry's ack when accepted.
    fn finish(
        &mut self,
        task_arn: &str,
        outcome: Outcome,
        now: Instant,
        delay: Duration,
    ) -> Option<Entry> {
        let q = self.tasks.get_mut(task_arn)?;
        q.in_flight = false;
        let done = match outcome {
            Outcome::Accepted | Outcome::Rejected => {
                q.failures = 0;
                q.next_try = None;
                q.items.pop_front()
            }
            Outcome::Retry => {
                q.failures += 1;
                q.next_try = Some(now + delay);
                None
            }
        };
        if q.items.is_empty() {
            self.tasks.remove(task_arn);
        }
        done
    }

    /// Test helper: [`ReportQueue::finish`] without the ack.
    pub fn complete(&mut self, task_arn: &str, outcome: Outcome, now: Instant) {
        let failures = self.failures(task_arn) + 1;
        self.finish(task_arn, outcome, now, backoff(failures));
    }

    /// Failures of the head report of `task_arn` so far.
    pub fn failures(&self, task_arn: &str) -> u32 {
        self.tasks.get(task_arn).map_or(0, |q| q.failures)
    }

    /// When the next queued report becomes due (none in flight, with a back-off).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.tasks
            .values()
            .filter(|q| !q.in_flight && !q.items.is_empty())
            .filter_map(|q| q.next_try)
            .min()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// The sending side of the report queue (cheap to clone).
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Entry>,
}

impl Reporter {
    /// Starts the sender task. It ends once every `Reporter` is dropped and the queue drained.
    pub fn spawn(control: Arc<dyn ControlClient>) -> (Reporter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let join = tokio::spawn(run(control, rx));
        (Reporter { tx }, join)
    }

    /// Queues a report; `on_ack` runs when the control plane accepted it.
    pub fn submit(&self, report: Report, on_ack: Option<AckFn>) {
        tracing::debug!(task = %report.task_arn, status = report.status.as_str(), "report queued");
        if self.tx.send(Entry { report, on_ack }).is_err() {
            tracing::warn!("the report sender has stopped; report dropped");
        }
    }
}

async fn run(control: Arc<dyn ControlClient>, mut rx: mpsc::UnboundedReceiver<Entry>) {
    let mut queue = ReportQueue::new();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        for report in queue.take_ready(Instant::now()) {
            let control = Arc::clone(&control);
            in_flight.push(async move {
                let result = control.submit_task_state_change(&report.body).await;
                (report, result)
            });
        }
        if !open && queue.is_empty() && in_flight.is_empty() {
            return;
        }
        let wake = queue.next_wakeup();
        tokio::select! {
            m = rx.recv(), if open => match m {
                Some(e) => queue.push(e),
                None => open = false,
            },
            Some((report, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let outcome = match &result {
                    Ok(()) => Outcome::Accepted,
                    Err(e) => classify(e),
                };
                let failures = queue.failures(&report.task_arn) + 1;
                match (&result, outcome) {
                    (Err(e), Outcome::Rejected) => tracing::warn!(task = %report.task_arn,
                        status = report.status.as_str(), error = %crate::error_chain(e),
                        "the control plane rejected a task state report; dropped"),
                    (Err(e), _) if failures.is_power_of_two() => tracing::warn!(
                        task = %report.task_arn, status = report.status.as_str(), failures,
                        error = %crate::error_chain(e), "cannot report a task state change; retrying"),
                    (Err(e), _) => tracing::debug!(task = %report.task_arn, failures,
                        error = %crate::error_chain(e), "report failed again"),
                    (Ok(()), _) => tracing::debug!(task = %report.task_arn,
                        status = report.status.as_str(), "report accepted"),
                }
                let base = backoff(failures);
                let jitter = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 4);
                let delay = base + Duration::from_millis(jitter);
                if let Some(entry) = queue.finish(&report.task_arn, outcome, Instant::now(), delay) {
                    if outcome == Outcome::Accepted {
                        if let Some(ack) = entry.on_ack {
                            ack(&entry.report);
                        }
                    }
                }
            },
            _ = sleep_until_opt(wake), if wake.is_some() => {},
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeControl;
    use serde_json::json;

    fn report(task: &str, status: TaskStatus) -> Report {
        Report {
            task_arn: task.into(),
            status,
            body: json!({"task": task, "status": status.as_str()}),
        }
    }

    #[test]
    fn queue_keeps_per_task_order_and_backs_off() {
        let mut q = ReportQueue::new();
        let t0 = Instant::now();
        q.push_report(report("a", TaskStatus::Pending));
        q.push_report(report("a", TaskStatus::Running));
        q.push_report(report("b", TaskStatus::Pending));
        let ready = q.take_ready(t0);
        assert_eq!(
            ready
                .iter()
                .map(|r| (r.task_arn.as_str(), r.status))
                .collect::<Vec<_>>(),
            vec![("a", TaskStatus::Pending), ("b", TaskStatus::Pending)]
        );
        // In flight: nothing more for these tasks.
        assert!(q.take_ready(t0).is_empty());
        q.complete("b", Outcome::Accepted, t0);
        q.complete("a", Outcome::Retry, t0);
        assert_eq!(q.failures("a"), 1);
        assert_eq!(q.next_wakeup(), Some(t0 + MIN_BACKOFF));
        assert!(q.take_ready(t0).is_empty());
        // Retried in order: PENDING again, not RUNNING.
        let ready = q.take_ready(t0 + MIN_BACKOFF);
        assert_eq!(ready[0].status, TaskStatus::Pending);
        q.complete("a", Outcome::Retry, t0 + MIN_BACKOFF);
        assert_eq!(q.next_wakeup(), Some(t0 + MIN_BACKOFF + backoff(2)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(q.take_ready(later)[0].status, TaskStatus::Pending);
        q.complete("a", Outcome::Rejected, later);
        assert_eq!(q.failures("a"), 0);
        assert_eq!(q.take_ready(later)[0].status, TaskStatus::Running);
        q.complete("a", Outcome::Accepted, later);
        assert!(q.is_empty());
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn classification() {
        let aws = |status, code: &str| ClientError::Aws {
            status,
            code: code.into(),
            message: "The referenced task was not found.".into(),
            request_id: None,
        };
        assert_eq!(
            classify(&aws(400, "InvalidParameterException")),
            Outcome::Rejected
        );
        assert_eq!(classify(&aws(400, "ClientException")), Outcome::Rejected);
        assert_eq!(classify(&aws(500, "ServerException")), Outcome::Retry);
        assert_eq!(classify(&aws(400, "ThrottlingException")), Outcome::Retry);
        assert_eq!(
            classify(&aws(403, "InvalidSignatureException")),
            Outcome::Retry
        );
        assert_eq!(
            classify(&ClientError::Timeout { url: "u".into() }),
            Outcome::Retry
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reporter_retries_in_order_and_drops_rejected_reports() {
        let control = Arc::new(FakeControl::default());
        // Two server faults, then a rejection of the second report, then all accepted.
        control.fail_next_reports(vec![
            Some(ClientError::Aws {
                status: 500,
                code: "ServerException".into(),
                message: "down".into(),
                request_id: None,
            }),
            Some(ClientError::Timeout { url: "u".into() }),
            None,
            Some(ClientError::Aws {
                status: 400,
                code: "InvalidParameterException".into(),
                message: "The referenced task was not found.".into(),
                request_id: None,
            }),
        ]);
        let (reporter, join) = Reporter::spawn(control.clone());
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        for status in [
            TaskStatus::Pending,
            TaskStatus::Activating,
            TaskStatus::Running,
        ] {
            let acked = Arc::clone(&acked);
            reporter.submit(
                report("t1", status),
                Some(Box::new(move |r: &Report| {
                    acked.lock().expect("lock").push(r.status);
                })),
            );
        }
        drop(reporter);
        tokio::time::timeout(Duration::from_secs(120), join)
            .await
            .expect("drained")
            .expect("join");
        let statuses: Vec<String> = control
            .attempts()
            .iter()
            .map(|v| v["status"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            statuses,
            vec!["PENDING", "PENDING", "PENDING", "ACTIVATING", "RUNNING"]
        );
        assert_eq!(
            *acked.lock().expect("lock"),
            vec![TaskStatus::Pending, TaskStatus::Running]
        );
    }
}
