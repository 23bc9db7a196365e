//! Graceful shutdown with a deadline, the one mechanism every server in the mesh stops with:
//! the proxy's listener generations and the process, the registry's HTTP server, blocking
//! queries and checks, the control plane's ADS streams and admin server.
//!
//! A [`Signal`] is held by whoever decides when to stop; [`Watch`]es (cheap clones) go to
//! whatever must react. A drain moves one way: [`State::Running`], then [`State::Draining`]
//! (stop taking new work, finish what is in flight), then [`State::Aborted`] (the deadline
//! passed: drop what is left now). Work in flight holds a [`Blocker`]; [`Signal::drain`]
//! waits for every blocker up to its deadline, then aborts. Dropping a `Signal` aborts: a
//! watcher whose owner is gone has nothing to finish for.
//!
//! [`run_with_drain`] composes them: a server runs under a child signal that starts
//! draining when its parent does and is aborted at its own deadline, and the parent's drain
//! waits for the whole server.
//!
//! Shaped after ztunnel's `drain.rs` (trigger, watcher, blocker, run-with-drain); the state is
//! a `tokio::sync::watch`, so a connection asks "did anything change?" with one atomic load.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Where a drain is. Ordered: a drain only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Running,
    /// Stop taking new work; finish what is in flight.
    Draining,
    /// The deadline passed (or the signal is gone): stop now.
    Aborted,
}

/// Blockers still held.
#[derive(Debug, Default)]
struct Tracker {
    active: AtomicUsize,
    released: Notify,
}

impl Tracker {
    async fn released(&self) {
        loop {
            // Registered before the check, so a release between the two is not missed.
            let notified = self.released.notified();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A new drain: the signal for whoever decides when to stop, a watch for the rest.
pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(State::Running);
    let tracker = Arc::new(Tracker::default());
    (
        Signal {
            tx,
            tracker: Arc::clone(&tracker),
        },
        Watch { rx, tracker },
    )
}

/// Starts and ends a drain. Dropping it aborts.
#[derive(Debug)]
pub struct Signal {
    tx: watch::Sender<State>,
    tracker: Arc<Tracker>,
}

/// How a [`Signal::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every blocker was released within the deadline.
    Complete,
    /// The deadline passed with this many blockers held; they were told to abort.
    Aborted { left: usize },
}

/// After an abort, how long [`Signal::drain`] and [`run_with_drain`] wait for the work that
/// was told to stop, so that its resources are gone when they return.
const ABORT_GRACE: Duration = Duration::from_secs(5);

impl Signal {
    pub fn watch(&self) -> Watch {
        Watch {
            rx: self.tx.subscribe(),
            tracker: Arc::clone(&self.tracker),
        }
    }

    pub fn state(&self) -> State {
        *self.tx.borrow()
    }

    /// Starts draining. False when it had already started (or was aborted).
    pub fn start(&self) -> bool {
        self.advance(State::Draining)
    }

    /// Aborts: everything still running stops now.
    pub fn abort(&self) {
        self.advance(State::Aborted);
    }

    fn advance(&self, to: State) -> bool {
        self.tx.send_if_modified(|state| {
            if *state < to {
                *state = to;
                true
            } else {
                false
            }
        })
    }

    /// Blockers still held.
    pub fn in_flight(&self) -> usize {
        self.tracker.active.load(Ordering::Acquire)
    }

    /// Resolves once no blocker is held (at once when none is).
    pub async fn released(&self) {
        self.tracker.released().await;
    }

    /// Starts draining, waits up to `deadline` for every blocker, then aborts and gives what
    /// is left a short grace to stop.
    pub async fn drain(&self, deadline: Duration) -> Drained {
        self.start();
        if tokio::time::timeout(deadline, self.released())
            .await
            .is_ok()
        {
            return Drained::Complete;
        }
        let left = self.in_flight();
        self.abort();
        let _ = tokio::time::timeout(ABORT_GRACE, self.released()).await;
        Drained::Aborted { left }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Watches a drain. Clones are cheap (a reference count); each keeps its own idea of which
/// state it has seen, for [`Watch::has_changed`].
#[derive(Debug, Clone)]
pub struct Watch {
    rx: watch::Receiver<State>,
    tracker: Arc<Tracker>,
}

impl Watch {
    /// The current state. A dropped signal reads as aborted.
    pub fn state(&self) -> State {
        if self.rx.has_changed().is_err() {
            return State::Aborted;
        }
        *self.rx.borrow()
    }

    /// Whether the state moved since this watch last looked ([`Watch::update`],
    /// [`Watch::changed`]): one atomic load, for loops that ask between requests.
    pub fn has_changed(&self) -> bool {
        self.rx.has_changed().unwrap_or(true)
    }

    /// The current state, marked as seen.
    pub fn update(&mut self) -> State {
        if self.rx.has_changed().is_err() {
            return State::Aborted;
        }
        *self.rx.borrow_and_update()
    }

    /// Waits for the state to move past the one this watch last saw, and returns it. Once
    /// aborted, returns [`State::Aborted`] at once.
    pub async fn changed(&mut self) -> State {
        match self.rx.changed().await {
            Ok(()) => *self.rx.borrow_and_update(),
            Err(_) => State::Aborted,
        }
    }

    /// Resolves once draining has started (or the drain was aborted).
    pub async fn draining(&mut self) {
        let _ = self.rx.wait_for(|s| *s >= State::Draining).await;
    }

    /// Resolves once the drain is aborted.
    pub async fn aborted(&mut self) {
        let _ = self.rx.wait_for(|s| *s == State::Aborted).await;
    }

    /// [`Watch::draining`] as an owned future, for servers that take a shutdown future.
    pub async fn signaled(mut self) {
        self.draining().await;
    }

    /// Holds the drain open until dropped: [`Signal::drain`] and [`run_with_drain`] wait for
    /// every blocker (up to their deadline).
    pub fn blocker(&self) -> Blocker {
        self.tracker.active.fetch_add(1, Ordering::AcqRel);
        Blocker {
            tracker: Arc::clone(&self.tracker),
        }
    }
}

/// Work in flight under a drain; released when dropped.
#[derive(Debug)]
pub struct Blocker {
    tracker: Arc<Tracker>,
}

impl Drop for Blocker {
    fn drop(&mut self) {
        if self.tracker.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.released.notify_waiters();
        }
    }
}

/// Runs a server under `parent`: `make` gets a child watch (for the server's accept loop
/// and its connections, which hold blockers from it). When the parent starts draining the
/// child does; the run ends when the server's future has returned and every child blocker
/// is released, or at `deadline`, when the child is aborted and the server gets a short
/// grace to return. The parent's own drain waits for all of it. `None` when the server's
/// future had to be dropped unfinished.
pub async fn run_with_drain<F, Fut>(
    parent: Watch,
    deadline: Duration,
    make: F,
) -> Option<Fut::Output>
where
    F: FnOnce(Watch) -> Fut,
    Fut: Future,
{
    let _held = parent.blocker();
    let mut parent = parent;
    let (signal, child) = channel();
    let server = make(child);
    tokio::pin!(server);
    tokio::select! {
        out = &mut server => return Some(out),
        () = parent.draining() => {}
    }
    if parent.state() == State::Aborted {
        signal.abort();
    } else {
        signal.start();
    }
    let mut out = None;
    let cut_off = tokio::time::sleep(deadline);
    tokio::pin!(cut_off);
    loop {
        tokio::select! {
            done = &mut server, if out.is_none() => out = Some(done),
            () = signal.released(), if out.is_some() => return out,
            () = &mut cut_off => break,
            () = parent.aborted() => break,
        }
    }
    tracing::info!(
        left = signal.in_flight(),
        "drain deadline passed; aborting what is left"
    );
    signal.abort();
    let grace = tokio::time::sleep(ABORT_GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            done = &mut server, if out.is_none() => out = Some(done),
            () = signal.released(), if out.is_some() => return out,
            () = &mut grace => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_blockers_then_completes() {
        let (signal, watch) = channel();
        let blocker = watch.blocker();
        let mut w = watch.clone();
        let task = tokio::spawn(async move {
            w.draining().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(blocker);
        });
        let started = tokio::time::Instant::now();
        assert_eq!(
            signal.drain(Duration::from_secs(10)).await,
            Drained::Complete
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(watch.state(), State::Draining);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_aborts_at_the_deadline() {
        let (signal, watch) = channel();
        let blocker = watch.blocker();
        let mut w = watch.clone();
        let task = tokio::spawn(async move {
            w.aborted().await;
            drop(blocker);
        });
        let started = tokio::time::Instant::now();
        assert_eq!(
            signal.drain(Duration::from_secs(10)).await,
            Drained::Aborted { left: 1 }
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(signal.in_flight(), 0);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn states_move_forward_only_and_a_dropped_signal_aborts() {
        let (signal, mut watch) = channel();
        assert_eq!(watch.state(), State::Running);
        assert!(!watch.has_changed());
        assert!(signal.start());
        assert!(!signal.start());
        assert!(watch.has_changed());
        assert_eq!(watch.update(), State::Draining);
        assert!(!watch.has_changed());
        signal.abort();
        assert!(!signal.start());
        assert_eq!(watch.changed().await, State::Aborted);

        let (signal, mut watch) = channel();
        drop(signal);
        assert!(watch.has_changed());
        assert_eq!(watch.state(), State::Aborted);
        watch.aborted().await;
        assert_eq!(watch.changed().await, State::Aborted);
    }

    #[tokio::test(start_paused = true)]
    async fn run_with_drain_follows_the_parent_and_cuts_off_at_its_deadline() {
        // A server that returns when told to drain, but whose connection ignores the drain.
        let (parent, watch) = channel();
        let run = tokio::spawn(run_with_drain(
            watch.clone(),
            Duration::from_secs(5),
            |mut child: Watch| async move {
                let conn = child.blocker();
                let mut conn_watch = child.clone();
                tokio::spawn(async move {
                    conn_watch.aborted().await;
                    drop(conn);
                });
                child.draining().await;
                "stopped"
            },
        ));
        tokio::task::yield_now().await;
        assert_eq!(parent.in_flight(), 1, "the run holds the parent open");
        let started = tokio::time::Instant::now();
        assert_eq!(
            parent.drain(Duration::from_secs(60)).await,
            Drained::Complete
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // Cut off, but the server returned after the abort, within the grace.
        assert_eq!(run.await.unwrap(), Some("stopped"));
    }

    #[tokio::test(start_paused = true)]
    async fn run_with_drain_returns_when_the_server_ends_on_its_own() {
        let (parent, watch) = channel();
        let out = run_with_drain(watch, Duration::from_secs(5), |_child| async { 7 }).await;
        assert_eq!(out, Some(7));
        assert_eq!(parent.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_parent_abort_cuts_the_run_short() {
        let (parent, watch) = channel();
        let run = tokio::spawn(run_with_drain(
            watch,
            Duration::from_secs(60),
            |mut child: Watch| async move { child.aborted().await },
        ));
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        parent.start();
        tokio::time::sleep(Duration::from_secs(1)).await;
        parent.abort();
        assert_eq!(run.await.unwrap(), Some(()));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
