//! What the scenarios share: client worker threads (one monoio runtime each, optionally pinned)
//! bounded by the deadline, per-worker counters the main thread sums, phase gates, source
//! address spreading, the live progress line and the client's own CPU use.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use hdrhistogram::Histogram;

use crate::payload::{self, Incoming, Stamp, Tracker, Verdict};
use crate::report::CpuUse;
use crate::{Common, Driver};

/// Connections per source address before the next 127.0.0.x is used.
pub const PER_SOURCE: usize = 25_000;

/// The source address for connection `id`: the kernel's choice below [`PER_SOURCE`], then
/// 127.0.0.2, 127.0.0.3, ... (each with its own ephemeral port range).
pub fn source_for(id: usize) -> Option<IpAddr> {
    (id >= PER_SOURCE).then(|| {
        let octet = (1 + id / PER_SOURCE).min(254) as u8;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet))
    })
}

/// A phase gate a plain thread opens and monoio workers await (monoio's `sync` wakes them).
#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    wakers: Mutex<Vec<Arc<AtomicWaker>>>,
}

impl Gate {
    /// Opens the gate and wakes every waiter.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
        for w in self.wakers.lock().expect("gate lock").iter() {
            w.wake();
        }
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        if self.open.load(Ordering::Acquire) {
            return;
        }
        let waker = Arc::new(AtomicWaker::new());
        self.wakers.lock().expect("gate lock").push(waker.clone());
        std::future::poll_fn(|cx| {
            waker.register(cx.waker());
            if self.open.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// A wake-up between two tasks of one worker (no cross-thread use).
#[derive(Default)]
pub struct Notify {
    waker: Cell<Option<Waker>>,
}

impl Notify {
    /// Wakes the waiting task, if any.
    pub fn notify(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits until `ready()` holds (re-checked after every notify).
    pub async fn wait_until(&self, ready: impl Fn() -> bool) {
        std::future::poll_fn(|cx| {
            if ready() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }
}

/// One worker's counters. Only that worker writes them (so a plain load+store suffices); the
/// main thread reads them for progress and the report.
#[derive(Default)]
#[repr(align(128))]
pub struct Slot {
    /// Connections upgraded and authenticated.
    pub opened: AtomicU64,
    /// Connections that joined their group (ready for the measured phase).
    pub joined: AtomicU64,
    /// Connections or sessions that failed.
    pub failed: AtomicU64,
    /// Messages (or requests) sent.
    pub sent: AtomicU64,
    /// Work done: sessions completed, messages echoed, deliveries counted at members.
    pub done: AtomicU64,
    /// Secondary receipts: publishers' copies (fanout), API responses (publish).
    pub acked: AtomicU64,
    /// Messages received a second time.
    pub duplicated: AtomicU64,
    /// Messages received after a later one from the same sender.
    pub reordered: AtomicU64,
    /// Messages nobody sent: unknown sender, sequence beyond the count, wrong group.
    pub unexpected: AtomicU64,
    /// Connections closed cleanly (Close answered by Close).
    pub closed: AtomicU64,
    /// Publishers that stopped sending (done, failed, or never connected).
    pub feeds_ended: AtomicU64,
}

/// Adds `n` to a counter only this thread writes.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// State shared by the main thread and every worker.
pub struct Shared {
    /// One counter slot per worker.
    pub slots: Vec<Slot>,
    /// Opened when the measured phase starts.
    pub gate: Gate,
    /// Opened to end the run early: every worker drops its tasks.
    pub stop: Gate,
    /// The shared time origin of payload timestamps.
    pub origin: Instant,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    /// State for `workers` workers.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: (0..workers).map(|_| Slot::default()).collect(),
            gate: Gate::default(),
            stop: Gate::default(),
            origin: Instant::now(),
            first_error: Mutex::new(None),
        })
    }

    /// The sum of one counter over every worker.
    pub fn sum(&self, f: impl Fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Keeps the first error message (later ones are only counted).
    pub fn note_error(&self, what: &str, e: impl std::fmt::Display) {
        let mut first = self.first_error.lock().expect("error lock");
        if first.is_none() {
            *first = Some(format!("{what}: {e}"));
        }
    }

    /// The first error noted, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("error lock").clone()
    }

    /// Nanoseconds since the shared origin.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A latency histogram in nanoseconds, 3 significant digits, up to 10 minutes.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// What a worker's tasks get.
pub struct Ctx {
    /// Worker index.
    pub index: usize,
    /// Number of workers.
    pub workers: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// This worker's latency histogram (ns).
    pub hist: Rc<RefCell<Histogram<u64>>>,
}

impl Ctx {
    /// This worker's counters.
    pub fn slot(&self) -> &Slot {
        &self.shared.slots[self.index]
    }

    /// Counts a failure and keeps its message if it is the first.
    pub fn fail(&self, what: &str, e: impl std::fmt::Display) {
        bump(&self.slot().failed, 1);
        self.shared.note_error(what, e);
    }

    /// Checks one server text message against `tracker` (messages from `group`): the stamp
    /// when it is a new message (its latency recorded when `record`), else `None` with the
    /// duplicate, unexpected message or server error counted.
    pub fn receive(
        &self,
        tracker: &mut Tracker,
        group: &str,
        payload: &[u8],
        now_ns: u64,
        record: bool,
    ) -> Option<Stamp> {
        let slot = self.slot();
        match payload::parse(payload, group) {
            Incoming::Stamped {
                stamp,
                group_ok: true,
            } => match tracker.record(stamp.client, stamp.seq) {
                v @ (Verdict::InOrder | Verdict::Reordered) => {
                    if v == Verdict::Reordered {
                        bump(&slot.reordered, 1);
                        self.shared
                            .note_error("reordered", format_args!("{stamp:?}"));
                    }
                    if record {
                        self.record_since(stamp.t_ns, now_ns);
                    }
                    Some(stamp)
                }
                Verdict::Duplicate => {
                    bump(&slot.duplicated, 1);
                    self.shared
                        .note_error("duplicate", format_args!("{stamp:?}"));
                    None
                }
                Verdict::Unexpected => {
                    bump(&slot.unexpected, 1);
                    self.shared
                        .note_error("unexpected", format_args!("{stamp:?}"));
                    None
                }
            },
            Incoming::Error(text) => {
                self.fail("server error", text);
                None
            }
            other => {
                bump(&slot.unexpected, 1);
                self.shared
                    .note_error("unexpected message", format_args!("{other:?}"));
                None
            }
        }
    }

    /// Records one latency sample, ending now, that started at `sent_ns` (shared origin).
    pub fn record_since(&self, sent_ns: u64, now_ns: u64) {
        let _ = self
            .hist
            .borrow_mut()
            .record(now_ns.saturating_sub(sent_ns).max(1));
    }
}

type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// A runtime with timers on the chosen driver.
pub fn runtime(driver: Driver) -> std::io::Result<Runtime> {
    use monoio::RuntimeBuilder;
    match driver {
        Driver::Auto => RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build(),
        Driver::IoUring => Ok(RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()?
            .into()),
        Driver::Epoll => Ok(RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()?
            .into()),
    }
}

/// Starts one thread per worker, each running `make(ctx)` on its own monoio runtime until it
/// ends or `deadline` passes (then its tasks are dropped). Each thread returns its histogram.
pub fn spawn_workers<F, Fut>(
    common: &Common,
    shared: &Arc<Shared>,
    deadline: Instant,
    make: F,
) -> anyhow::Result<Vec<JoinHandle<Histogram<u64>>>>
where
    F: Fn(Rc<Ctx>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut threads = Vec::with_capacity(common.workers);
    for index in 0..common.workers {
        let (shared, make) = (shared.clone(), make.clone());
        let (pin, cpu, workers) = (common.pin_cores, common.first_cpu + index, common.workers);
        let driver = common.driver;
        threads.push(
            std::thread::Builder::new()
                .name(format!("load-{index}"))
                .spawn(move || {
                    if pin {
                        let _ = monoio::utils::bind_to_cpu_set([cpu]);
                    }
                    let mut rt = runtime(driver).expect("client runtime");
                    let hist = Rc::new(RefCell::new(histogram()));
                    let ctx = Rc::new(Ctx {
                        index,
                        workers,
                        shared,
                        hist: hist.clone(),
                    });
                    let left = deadline.saturating_duration_since(Instant::now());
                    let stop = ctx.shared.clone();
                    rt.block_on(async move {
                        let mut work = std::pin::pin!(monoio::time::timeout(left, make(ctx)));
                        let mut stopped = std::pin::pin!(stop.stop.wait());
                        std::future::poll_fn(|cx| {
                            if work.as_mut().poll(cx).is_ready()
                                || stopped.as_mut().poll(cx).is_ready()
                            {
                                Poll::Ready(())
                            } else {
                                Poll::Pending
                            }
                        })
                        .await;
                    });
                    hist.borrow().clone()
                })?,
        );
    }
    Ok(threads)
}

/// Joins every worker and merges their histograms.
pub fn join_workers(threads: Vec<JoinHandle<Histogram<u64>>>) -> Histogram<u64> {
    let mut all = histogram();
    for t in threads {
        if let Ok(h) = t.join() {
            let _ = all.add(h);
        }
    }
    all
}

/// The process's own CPU time so far (user + system, all threads), from getrusage.
pub fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::time::TimeValLike;
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6
        }
        Err(_) => 0.0,
    }
}

/// Another process's CPU time so far (user + system, all threads), from /proc/<pid>/stat.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime from the text of /proc/<pid>/stat (fields 14 and 15; the command name in
/// field 2 may contain spaces and parentheses, so fields are counted after the last `)`).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// A point in time with the CPU used so far (this process's, and the server's when known),
/// to measure a phase.
#[derive(Clone, Copy)]
pub struct Mark {
    /// Wall clock.
    pub at: Instant,
    /// This process's CPU seconds.
    pub cpu: f64,
    /// The server's CPU seconds (`--server-pid`).
    pub server_cpu: Option<f64>,
}

impl Mark {
    /// Now.
    pub fn now(common: &Common) -> Self {
        Self {
            at: Instant::now(),
            cpu: cpu_seconds(),
            server_cpu: common.server_pid.and_then(process_cpu_seconds),
        }
    }

    /// The CPU use from `self` to `end`, on `workers` client workers.
    pub fn cpu_until(&self, end: &Mark, workers: usize) -> CpuUse {
        CpuUse {
            seconds: end.cpu - self.cpu,
            wall: end.at.duration_since(self.at).as_secs_f64(),
            workers,
            server: self.server_cpu.zip(end.server_cpu).map(|(a, b)| b - a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_fields_are_found_after_the_command() {
        let stat = "6939 (wsgate (srv) 1) S 6937 6937 1 0 -1 4194560 2170 0 0 0 1234 567 0 0 20 0 2 0 1 2 3";
        assert_eq!(stat_cpu_ticks(stat), Some(1801));
        assert_eq!(stat_cpu_ticks("12 (x) S 1"), None);
        let own = process_cpu_seconds(std::process::id()).unwrap();
        assert!(own >= 0.0);
    }

    #[test]
    fn sources_spread_past_the_per_address_limit() {
        assert_eq!(source_for(0), None);
        assert_eq!(source_for(PER_SOURCE - 1), None);
        assert_eq!(
            source_for(PER_SOURCE),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            source_for(3 * PER_SOURCE + 7),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)))
        );
    }
}

/// The live progress line on stderr, at most once per second (overwritten on a terminal).
pub struct Progress {
    start: Instant,
    last: Instant,
    last_done: u64,
    tty: bool,
    printed: bool,
}

impl Progress {
    /// A progress line timed from `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            last: Instant::now(),
            last_done: 0,
            tty: std::io::stderr().is_terminal(),
            printed: false,
        }
    }

    /// Prints `label: done/total` with the rate since the last line, if a second has passed.
    pub fn tick(&mut self, label: &str, done: u64, total: u64) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        if dt < 1.0 {
            return;
        }
        let rate = done.saturating_sub(self.last_done) as f64 / dt;
        self.last = now;
        self.last_done = done;
        let line = format!(
            "[{:6.1} s] {label}: {done}/{total} ({}/s)",
            now.duration_since(self.start).as_secs_f64(),
            crate::report::si(rate)
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        self.printed = true;
    }

    /// Starts a new phase: the next rate counts from `done`.
    pub fn phase(&mut self, done: u64) {
        self.last_done = done;
        self.last = Instant::now();
    }

    /// Ends the line on a terminal.
    pub fn finish(&mut self) {
        if self.tty && self.printed {
            eprintln!();
        }
        self.printed = false;
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The condition held.
    Done,
    /// The deadline passed first.
    Deadline,
    /// Every worker ended first (their connections failed or finished short).
    Ended,
}

impl Outcome {
    /// Why the work is not done, for the report.
    pub fn why(self, timeout: Duration) -> String {
        match self {
            Self::Done => "done".into(),
            Self::Deadline => format!("timed out after {} s", timeout.as_secs()),
            Self::Ended => "every client worker ended early".into(),
        }
    }
}

/// Polls every millisecond until `done()`, the deadline, or every worker has ended, printing
/// progress (`count()` of `total`).
pub fn wait_for(
    progress: &mut Progress,
    label: &str,
    total: u64,
    deadline: Instant,
    threads: &[JoinHandle<Histogram<u64>>],
    count: impl Fn() -> u64,
    mut done: impl FnMut() -> bool,
) -> Outcome {
    loop {
        if done() {
            return Outcome::Done;
        }
        if Instant::now() >= deadline {
            return if done() {
                Outcome::Done
            } else {
                Outcome::Deadline
            };
        }
        if threads.iter().all(|t| t.is_finished()) {
            return if done() {
                Outcome::Done
            } else {
                Outcome::Ended
            };
        }
        progress.tick(label, count(), total);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Opens one connection per item, at most `concurrency` at a time (each chunk's upgrades run
/// concurrently on this worker), and returns those that opened, in order; `opened` hears of
/// each success as it happens (for the progress line), `failed` of each failure.
pub async fn open_all<I, T, E, Fut>(
    items: &[I],
    concurrency: usize,
    open: impl Fn(I) -> Fut,
    mut opened: impl FnMut(&I),
    mut failed: impl FnMut(I, E),
) -> Vec<(I, T)>
where
    I: Copy,
    Fut: Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: 'static,
{
    let mut open_now = Vec::with_capacity(items.len());
    for chunk in items.chunks(concurrency.max(1)) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|&item| (item, monoio::spawn(open(item))))
            .collect();
        for (item, handle) in handles {
            match handle.await {
                Ok(conn) => {
                    opened(&item);
                    open_now.push((item, conn));
                }
                Err(e) => failed(item, e),
            }
        }
    }
    open_now
}

/// Waits until each of `conns` connections has joined or failed, then marks the start and
/// opens the gate: every client enters the measured phase at once. Returns how the wait ended
/// and the start mark.
pub fn start_together(
    progress: &mut Progress,
    shared: &Shared,
    common: &Common,
    conns: u64,
    deadline: Instant,
    threads: &[JoinHandle<Histogram<u64>>],
) -> (Outcome, Mark) {
    let joined = || shared.sum(|s| &s.joined);
    let outcome = wait_for(progress, "joined", conns, deadline, threads, joined, || {
        joined() + shared.sum(|s| &s.failed) >= conns
    });
    let mark = Mark::now(common);
    shared.gate.open();
    progress.phase(0);
    (outcome, mark)
}

/// Ends the measured phase: marks the end, tells the workers to drop what they still run
/// unless the phase `finished`, and joins them; returns the end mark and their latencies.
pub fn end_phase(
    progress: &mut Progress,
    shared: &Shared,
    common: &Common,
    threads: Vec<JoinHandle<Histogram<u64>>>,
    finished: bool,
) -> (Mark, Histogram<u64>) {
    let mark = Mark::now(common);
    if !finished {
        shared.stop.open();
    }
    progress.finish();
    (mark, join_workers(threads))
}
