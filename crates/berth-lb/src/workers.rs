//! The data plane's threads, like haproxy's `nbthread` (default: half the CPUs, see
//! [`default_threads`]).
//!
//! Each worker is one OS thread running a tokio `current_thread` runtime. Every listener has
//! one `SO_REUSEPORT` socket per worker (the kernel spreads new connections over them), so an
//! accepted connection, its requests, and the upstream connections it uses (each target keeps
//! one idle pool per worker, see [`slot`]) stay on one thread: no cross-thread wakeups, no
//! work stealing, no contended locks on the request path. What the workers share (routing
//! tables, target health, in-flight counters, draining) is atomics and `ArcSwap`s, as before.
//!
//! Workers start with the first listener and stop at [`Workers::stop`] (shutdown) or when the
//! data plane is dropped: once their accept loops have ended (sockets closed, in-flight
//! requests finished) or after [`GRACE`], the runtime is dropped with whatever is left
//! (WebSocket tunnels, idle upstream connections).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// How long a stopping worker waits for its listeners' in-flight requests.
pub const GRACE: Duration = Duration::from_secs(30);

thread_local! {
    /// This thread's worker index (`usize::MAX` off the workers).
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The per-worker slot of the current thread among `n` (0 off the workers, e.g. when the
/// data plane runs without threads on the caller's runtime).
pub fn slot(n: usize) -> usize {
    let i = INDEX.with(Cell::get);
    if i < n {
        i
    } else {
        0
    }
}

/// The default number of workers: half the available CPUs, at least one.
///
/// The data plane shares its host with the containers it forwards to (and, in `bench/lb`,
/// with the load generator): on 2 CPUs one worker served as many requests per second at 64
/// connections as two (45.5k), and at 4 connections 38k instead of 28k with a p99 of 0.2 ms
/// instead of 2-3 ms, the two workers being preempted by the backends they wait on. A host
/// that runs nothing but the data plane can ask for one per CPU (`berth serve --lb-threads`).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Running worker threads.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    alive: Arc<Alive>,
    /// Fires when the thread is about to end.
    done: oneshot::Receiver<()>,
}

/// Count of a worker's accept loops still running (with their connections).
#[derive(Debug, Default)]
struct Alive {
    n: AtomicUsize,
    zero: Notify,
}

/// Held by an accept loop for as long as it (or its graceful shutdown) runs.
#[derive(Debug)]
pub struct AliveGuard(Arc<Alive>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Alive {
    async fn idle(&self) {
        loop {
            let notified = self.zero.notified();
            if self.n.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Workers {
    /// Starts `n` workers (their stop token a child of `parent`). Fails when a runtime or
    /// thread cannot be created; the ones already started then stop.
    pub fn start(n: usize, parent: &CancellationToken) -> std::io::Result<Workers> {
        let stop = parent.child_token();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            };
            let handle = rt.handle().clone();
            let alive = Arc::new(Alive::default());
            let (tx, done) = oneshot::channel();
            let (stop2, alive2) = (stop.clone(), alive.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("berth-lb-{i}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(i));
                    rt.block_on(async move {
                        stop2.cancelled().await;
                        let _ = tokio::time::timeout(GRACE, alive2.idle()).await;
                    });
                    drop(rt);
                    let _ = tx.send(());
                });
            if let Err(e) = spawned {
                stop.cancel();
                return Err(e);
            }
            workers.push(Worker {
                handle,
                alive,
                done,
            });
        }
        tracing::debug!(workers = n, "data plane workers started");
        Ok(Workers { workers, stop })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs `f(alive)` as a task on worker `i`; the guard keeps the worker up while stopping.
    pub fn spawn<F, Fut>(&self, i: usize, f: F)
    where
        F: FnOnce(AliveGuard) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(w) = self.workers.get(i) else { return };
        w.alive.n.fetch_add(1, Ordering::AcqRel);
        let guard = AliveGuard(w.alive.clone());
        w.handle.spawn(f(guard));
    }

    /// Stops every worker: waits until their accept loops are done (at most [`GRACE`]) and
    /// their threads have dropped their runtimes.
    pub async fn stop(self) {
        self.stop.cancel();
        for w in self.workers {
            let _ = tokio::time::timeout(GRACE + Duration::from_secs(1), w.done).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_their_worker_and_stop_ends_the_threads() {
        let root = CancellationToken::new();
        let w = Workers::start(3, &root).expect("start");
        assert_eq!(w.len(), 3);
        assert_eq!(slot(3), 0, "off the workers");
        for i in 0..3 {
            let (tx, rx) = oneshot::channel();
            w.spawn(i, move |alive| async move {
                let _ = tx.send((slot(3), std::thread::current().name().map(String::from)));
                drop(alive);
            });
            let (s, name) = rx.await.expect("ran");
            assert_eq!(s, i);
            assert_eq!(name.as_deref(), Some(format!("berth-lb-{i}").as_str()));
        }
        // A task holding its guard until the stop keeps its worker up until it is done.
        let (tx, rx) = oneshot::channel::<()>();
        let stop = w.stop.clone();
        w.spawn(1, move |alive| async move {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(());
            drop(alive);
        });
        tokio::time::timeout(Duration::from_secs(5), w.stop())
            .await
            .expect("workers stop");
        rx.await
            .expect("the guarded task finished before its worker stopped");
    }
}
