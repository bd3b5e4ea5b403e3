//! Control of a running worker from another thread: reloaded settings to put in force, the
//! watchdog's liveness probes, and revocations to apply to the worker's connections. Posting
//! never blocks the worker: settings and jobs wait in a slot, probes are one atomic, and the
//! worker's control task applies them when it next runs, so a probe is answered only by a core
//! whose event loop still turns.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use atomic_waker::AtomicWaker;

use crate::config::Settings;

/// One worker's control slot, shared by the worker and the controlling threads.
#[derive(Debug, Default)]
pub(crate) struct Control {
    settings: Mutex<Option<Arc<Settings>>>,
    jobs: Mutex<Vec<Revoke>>,
    /// The newest probe posted.
    probe: AtomicU64,
    /// The newest probe the worker answered (every settings posted before it are in force).
    answered: AtomicU64,
    waker: AtomicWaker,
}

impl Control {
    /// Hands new settings to the worker; a newer post replaces one not yet applied.
    pub(crate) fn post_settings(&self, settings: Arc<Settings>) {
        *self.lock() = Some(settings);
        self.waker.wake();
    }

    /// Asks the worker to close its connections that match `revoke`.
    pub(crate) fn post_revoke(&self, revoke: Revoke) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(revoke);
        self.waker.wake();
    }

    /// Worker side: the revocations posted since the last call.
    pub(crate) fn take_jobs(&self) -> Vec<Revoke> {
        std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Asks the worker to answer probe `seq` (probes only grow).
    pub(crate) fn post_probe(&self, seq: u64) {
        self.probe.fetch_max(seq, Ordering::SeqCst);
        self.waker.wake();
    }

    /// The newest probe the worker answered.
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Worker side: waits for a post, then returns the settings to apply (if any) and the
    /// probe to acknowledge once they are applied.
    pub(crate) async fn next(&self) -> (Option<Arc<Settings>>, u64) {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            // The probe is read before the settings are taken: a probe posted after some
            // settings is acknowledged only together with them.
            let probe = self.probe.load(Ordering::SeqCst);
            let settings = self.lock().take();
            let jobs = !self
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if settings.is_some() || jobs || probe > self.answered.load(Ordering::SeqCst) {
                Poll::Ready((settings, probe))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Worker side: everything up to `probe` is done.
    pub(crate) fn acknowledge(&self, probe: u64) {
        self.answered.fetch_max(probe, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Settings>>> {
        // A poisoned slot still holds valid settings (posting cannot panic half-way).
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A revocation for one worker: close every connection whose user (or token `jti`) has this
/// fingerprint, and count them into `done`.
#[derive(Debug, Clone)]
pub(crate) struct Revoke {
    /// Matches the user (`true`) or the token's `jti` (`false`).
    pub(crate) by_user: bool,
    /// The fingerprint of the user id or jti (`AuthState::fingerprint`).
    pub(crate) key: u64,
    /// Where the worker reports.
    pub(crate) done: Arc<Countdown>,
}

/// Counts the workers still applying a revocation and the connections they closed; the API
/// request that posted it waits on it.
#[derive(Debug)]
pub(crate) struct Countdown {
    remaining: AtomicUsize,
    closed: AtomicUsize,
    waker: AtomicWaker,
}

impl Countdown {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            remaining: AtomicUsize::new(workers),
            closed: AtomicUsize::new(0),
            waker: AtomicWaker::new(),
        }
    }

    /// One worker is done, having closed `closed` connections.
    pub(crate) fn report(&self, closed: usize) {
        self.closed.fetch_add(closed, Ordering::SeqCst);
        self.remaining.fetch_sub(1, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Resolves when every worker reported; returns the connections closed.
    pub(crate) async fn wait(&self) -> usize {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.remaining.load(Ordering::SeqCst) == 0 {
                std::task::Poll::Ready(self.closed.load(Ordering::SeqCst))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The connections closed so far (when waiting timed out).
    pub(crate) fn closed_so_far(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}
