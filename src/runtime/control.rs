//! Control of a running worker from a plain thread: reloaded settings to put in force, and the
//! watchdog's liveness probes. Posting never blocks the worker: the settings wait in a slot,
//! probes are one atomic, and the worker's control task applies both when it next runs, so a
//! probe is answered only by a core whose event loop still turns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use atomic_waker::AtomicWaker;

use crate::config::Settings;

/// One worker's control slot, shared by the worker and the controlling threads.
#[derive(Debug, Default)]
pub(crate) struct Control {
    settings: Mutex<Option<Arc<Settings>>>,
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
            if settings.is_some() || probe > self.answered.load(Ordering::SeqCst) {
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
