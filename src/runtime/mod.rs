//! The IO shell: one thread per worker, each with its own monoio runtime (io_uring, or epoll where
//! io_uring is refused) and its own SO_REUSEPORT listener. Nothing is shared on the hot path but
//! one atomic connection counter. The only module with threads, sockets and clocks.

mod conn;
mod control;
mod member;
mod sys;
mod timer;
mod worker;

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use monoio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Driver, DriverChoice, Settings, TaskRun};
use crate::hub::{Hub, LocalHub};
use crate::metrics::CoreStats;
use crate::session::Session;
use crate::tables::Tables;

pub use crate::connection::Handler;
use control::Control;

/// Creates one `Handler` per accepted WebSocket; shared by every worker.
pub trait Service: Send + Sync + 'static {
    /// The per-connection handler.
    type Handler: Handler;
    /// A handler for a new connection.
    fn handler(&self) -> Self::Handler;
    /// A request on a path other than the WebSocket's that the service answers itself, ahead
    /// of the HTTP API's routes (a test server's extra routes), on the worker's thread. An
    /// answer appended to `out` (returning `true`) is sent and the connection closes after it.
    fn answer(&self, method: &str, target: &str, out: &mut Vec<u8>) -> bool {
        let _ = (method, target, out);
        false
    }
}

/// A running gateway: its address, its workers' drivers, and the means to stop it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    drivers: Vec<Driver>,
    stops: Vec<Arc<Stop>>,
    threads: Vec<JoinHandle<()>>,
    handle: Handle,
}

/// A worker that panicked: the gateway can no longer serve a share of its port (the kernel
/// keeps steering connections to that worker's listener), so the process must end or be
/// restarted. [`Handle::failures`] delivers one per worker that died.
#[derive(Debug, Clone)]
pub struct WorkerFailure {
    /// The worker's index.
    pub worker: usize,
    /// The panic message.
    pub message: String,
}

/// How often the liveness thread probes every worker: `GET /healthz` answers 503 while a
/// worker has not answered the probe posted one period earlier.
pub const LIVENESS_PERIOD: Duration = Duration::from_secs(1);

/// What every worker knows of the others' health (for `GET /healthz`).
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// Bit `i`: worker `i` did not answer the last liveness probe in time, or panicked.
    late: AtomicU64,
    /// Bit `i`: worker `i` panicked (it never answers again).
    dead: AtomicU64,
    /// Set when the server stops: the liveness thread ends.
    stopped: AtomicBool,
}

impl Liveness {
    /// The workers that do not answer (stuck or dead), by index.
    pub(crate) fn unresponsive(&self) -> Vec<usize> {
        let bits = self.late.load(Ordering::Acquire) | self.dead.load(Ordering::Acquire);
        (0..64).filter(|i| bits & (1 << i) != 0).collect()
    }

    fn mark_dead(&self, worker: usize) {
        self.dead.fetch_or(1 << (worker % 64), Ordering::AcqRel);
    }
}

/// What another thread may do with a running gateway: reload its settings, probe that every
/// worker still runs, read its counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    stats: Vec<Arc<CoreStats>>,
    controls: Vec<Arc<Control>>,
    probes: Arc<AtomicU64>,
    liveness: Arc<Liveness>,
    failures: crossbeam_channel::Receiver<WorkerFailure>,
}

impl Handle {
    /// Each worker's counters, by worker index.
    pub fn stats(&self) -> &[Arc<CoreStats>] {
        &self.stats
    }

    /// Open connections per worker.
    pub fn open_per_worker(&self) -> Vec<u64> {
        self.stats
            .iter()
            .map(|s| s.open_connections.load(Ordering::Relaxed))
            .collect()
    }

    /// Puts `settings` in force on every worker, for every request and message from now on;
    /// open connections stay open. Returns once each worker applied them, or an error naming
    /// the workers that did not within `wait`. Only what a reload may change should differ from
    /// the settings the server started with (the listeners and worker count stay).
    pub fn reload(&self, settings: Settings, wait: Duration) -> Result<(), String> {
        let settings = Arc::new(settings);
        for control in &self.controls {
            control.post_settings(settings.clone());
        }
        let late = self.probe_and_wait(wait);
        if late.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "workers {late:?} did not apply the new settings in time"
            ))
        }
    }

    /// A prober of its own: each caller (the service manager's watchdog, the `/healthz`
    /// liveness thread) judges the workers by the probes it posted itself, at its own pace.
    pub fn prober(&self) -> Prober {
        Prober {
            handle: self.clone(),
            last: 0,
        }
    }

    /// The workers that did not answer the liveness thread's last probe in time, or panicked:
    /// what `GET /healthz` reports.
    pub fn unresponsive(&self) -> Vec<usize> {
        self.liveness.unresponsive()
    }

    /// One message per worker that panicked. The binary exits non-zero on the first (so that a
    /// service manager restarts it); an embedding program decides for itself.
    pub fn failures(&self) -> crossbeam_channel::Receiver<WorkerFailure> {
        self.failures.clone()
    }

    fn post_probe(&self) -> u64 {
        let seq = self.probes.fetch_add(1, Ordering::SeqCst) + 1;
        for control in &self.controls {
            control.post_probe(seq);
        }
        seq
    }

    fn probe_and_wait(&self, wait: Duration) -> Vec<usize> {
        let seq = self.post_probe();
        let deadline = Instant::now() + wait;
        loop {
            let late = self.late(seq);
            if late.is_empty() || Instant::now() >= deadline {
                return late;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn late(&self, seq: u64) -> Vec<usize> {
        (self.controls.iter().enumerate())
            .filter(|(_, c)| c.answered() < seq)
            .map(|(i, _)| i)
            .collect()
    }
}

/// Liveness probes of one caller, judged by the probes it posted itself (a worker that answered
/// a later probe, posted by anyone, answered this one too).
#[derive(Debug)]
pub struct Prober {
    handle: Handle,
    last: u64,
}

impl Prober {
    /// Posts a new probe to every worker and returns the workers that had not answered this
    /// prober's previous one: an empty list means every worker's event loop turned since the
    /// last call.
    pub fn probe(&mut self) -> Vec<usize> {
        let late = self.handle.late(self.last);
        self.last = self.handle.post_probe();
        late
    }
}

impl Server {
    /// The bound address (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Each worker's counters, by worker index.
    pub fn stats(&self) -> &[Arc<CoreStats>] {
        &self.handle.stats
    }

    /// A handle for reloads, probes and counters from other threads.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The driver each worker runs on, by worker index.
    pub fn drivers(&self) -> &[Driver] {
        &self.drivers
    }

    /// Graceful shutdown: stops accepting, closes every WebSocket with 1001 after what is
    /// queued for it, and joins the workers once their connections ended or the shutdown
    /// deadline passed.
    pub fn shutdown(self) {
        for stop in &self.stops {
            stop.trigger();
        }
        self.join();
    }

    /// Waits for the workers to end.
    pub fn join(self) {
        self.handle.liveness.stopped.store(true, Ordering::Release);
        for thread in self.threads {
            // A worker that panicked has already printed why; the others still get joined.
            let _ = thread.join();
        }
    }
}

/// Starts `settings.workers` workers serving `service`; returns once every worker listens.
pub fn start<S: Service>(settings: Settings, service: S) -> io::Result<Server> {
    // The shared tables, once for the process's life: a reload keeps them.
    let tables = Arc::new(Tables::new(&settings.tables));
    let settings = Arc::new(settings);
    let service = Arc::new(service);
    let driver = pick_driver(settings.driver);
    let listeners = bind_listeners(&settings, driver)?;
    let addr = listeners[0].local_addr()?;
    let open = Arc::new(AtomicUsize::new(0));
    let hub = Hub::with_capacity(settings.workers, settings.hub_queue_messages);
    let stats: Vec<Arc<CoreStats>> = (0..settings.workers)
        .map(|_| Arc::new(CoreStats::default()))
        .collect();
    let all_stats: Arc<[Arc<CoreStats>]> = stats.clone().into();
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, io::Result<Driver>)>();
    let mut stops = Vec::with_capacity(settings.workers);
    let controls: Vec<Arc<Control>> = (0..settings.workers)
        .map(|_| Arc::new(Control::default()))
        .collect();
    let all_controls: Arc<[Arc<Control>]> = controls.clone().into();
    let liveness = Arc::new(Liveness::default());
    let (failure_tx, failures) = crossbeam_channel::unbounded();
    let mut threads = Vec::with_capacity(settings.workers);
    for (id, listener) in listeners.into_iter().enumerate() {
        let stop = Arc::new(Stop::default());
        stops.push(stop.clone());
        let control = controls[id].clone();
        let shared = WorkerShared {
            id,
            settings: settings.clone(),
            tables: tables.clone(),
            service: service.clone(),
            open: open.clone(),
            hub: hub.clone(),
            stats: stats[id].clone(),
            all_stats: all_stats.clone(),
            controls: all_controls.clone(),
            liveness: liveness.clone(),
        };
        let ready_tx = ready_tx.clone();
        let failure_tx = failure_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wsgate-core-{id}"))
            .spawn(move || {
                let liveness = shared.liveness.clone();
                // A second handle on the listening socket: a dead worker's runtime may keep the
                // listener (and its connections) open, and the kernel would go on steering
                // new connections to it.
                let listening = listener.try_clone();
                let run = || run_worker(shared, listener, driver, (stop, control), ready_tx);
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                    // Reported dead before its listener goes: a request that reaches another
                    // worker from then on sees it in /healthz.
                    liveness.mark_dead(id);
                    if let Ok(listening) = &listening {
                        // Out of the port's SO_REUSEPORT group; its backlog is reset.
                        let _ =
                            socket2::SockRef::from(listening).shutdown(std::net::Shutdown::Both);
                    }
                    let message = panic_message(&*panic);
                    tracing::error!(worker = id, panic = %message, "worker panicked");
                    let _ = failure_tx.send(WorkerFailure {
                        worker: id,
                        message,
                    });
                }
            })?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut drivers = vec![Driver::Epoll; settings.workers];
    let mut failure = None;
    for _ in 0..settings.workers {
        match ready_rx.recv() {
            Ok((id, Ok(d))) => drivers[id] = d,
            Ok((id, Err(e))) => {
                failure = Some(io::Error::new(e.kind(), format!("worker {id}: {e}")))
            }
            Err(_) => failure = Some(io::Error::other("a worker ended during start-up")),
        }
    }
    let server = Server {
        addr,
        drivers,
        stops,
        threads,
        handle: Handle {
            stats,
            controls: controls.clone(),
            probes: Arc::new(AtomicU64::new(0)),
            liveness,
            failures,
        },
    };
    match failure {
        Some(e) => {
            server.shutdown();
            Err(e)
        }
        None => {
            let mut prober = server.handle.prober();
            let liveness = server.handle.liveness.clone();
            std::thread::Builder::new()
                .name("wsgate-liveness".into())
                .spawn(move || {
                    while !liveness.stopped.load(Ordering::Acquire) {
                        let late = prober.probe();
                        let bits = late.iter().fold(0u64, |b, &i| b | 1 << (i % 64));
                        liveness.late.store(bits, Ordering::Release);
                        std::thread::sleep(LIVENESS_PERIOD);
                    }
                })?;
            Ok(server)
        }
    }
}

/// The text of a panic's payload (`panic!` with a literal or with format arguments).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Chooses the driver once for the process: `auto` probes io_uring (kernel support, seccomp,
/// `kernel.io_uring_disabled`) and falls back to epoll.
fn pick_driver(choice: DriverChoice) -> Driver {
    match choice {
        DriverChoice::IoUring => Driver::IoUring,
        DriverChoice::Epoll => Driver::Epoll,
        DriverChoice::Auto if io_uring_available() => Driver::IoUring,
        DriverChoice::Auto => Driver::Epoll,
    }
}

/// Whether this process may create an io_uring (kernel support, seccomp,
/// `kernel.io_uring_disabled`). The probe runs on a thread of its own: the kernel tears the
/// probe's ring down after it is dropped and queues work to the thread that made it, and that
/// work ends the thread's next blocking socket call that has a timeout with EINTR. The caller
/// (a test, an embedding program, [`start`]) must not inherit that.
pub fn io_uring_available() -> bool {
    std::thread::Builder::new()
        .name("wsgate-probe".into())
        .spawn(monoio::utils::detect_uring)
        .ok()
        .and_then(|probe| probe.join().ok())
        .unwrap_or(false)
}

/// The CPUs this process may run on, in order (every CPU when the mask cannot be read).
fn allowed_cpus() -> Vec<usize> {
    let total = std::thread::available_parallelism().map_or(1, usize::from);
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..total).collect(),
    }
}

/// One listener per worker on the same address; the first one resolves port 0 for the others.
fn bind_listeners(settings: &Settings, driver: Driver) -> io::Result<Vec<StdListener>> {
    let mut addr = settings.listen;
    if addr.port() != 0 && !settings.handover {
        refuse_if_in_use(addr)?;
    }
    let mut listeners = Vec::with_capacity(settings.workers);
    for _ in 0..settings.workers {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket
            .bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        socket.listen(i32::try_from(settings.backlog).unwrap_or(i32::MAX))?;
        // The epoll driver needs non-blocking sockets; io_uring's accept works on either.
        socket.set_nonblocking(driver == Driver::Epoll)?;
        let listener: StdListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Fails when something already listens on `addr`. The workers' listeners use SO_REUSEPORT,
/// so a second gateway would bind beside the first and the kernel would split new connections
/// (and so every group) between them; a probe bound without it finds the first one instead.
fn refuse_if_in_use(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {addr}: another process (another wsgate?) listens there; two \
                 gateways on one port would split every group. Stop it first, or start this one \
                 with --handover and then stop the old one"
            ),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}"),
        )),
        Ok(()) => Ok(()),
    }
}

/// The one millisecond clock every worker reads for per-address limits (they share the table).
static CLOCK: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// What a worker shares with the others: read-only settings and the global connection count.
pub(crate) struct WorkerShared<S> {
    pub(crate) id: usize,
    /// The settings the worker started with (a reload's come through its control slot).
    pub(crate) settings: Arc<Settings>,
    /// The shared tables, beside the settings and never inside them.
    pub(crate) tables: Arc<Tables>,
    pub(crate) service: Arc<S>,
    pub(crate) open: Arc<AtomicUsize>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) stats: Arc<CoreStats>,
    /// Every core's counters, for `GET /metrics` on any core.
    pub(crate) all_stats: Arc<[Arc<CoreStats>]>,
    /// Every core's control slot, for revocations posted from any core.
    pub(crate) controls: Arc<[Arc<Control>]>,
    /// Which workers answer, for `GET /healthz`.
    pub(crate) liveness: Arc<Liveness>,
}

impl<S> WorkerShared<S> {
    /// Milliseconds on the process-wide clock of the per-address limits.
    pub(crate) fn clock_ms(&self) -> u64 {
        let start = CLOCK.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn run_worker<S: Service>(
    shared: WorkerShared<S>,
    listener: StdListener,
    driver: Driver,
    (stop, control): (Arc<Stop>, Arc<Control>),
    ready: mpsc::Sender<(usize, io::Result<Driver>)>,
) {
    let id = shared.id;
    if shared.settings.pin_cores {
        // The i-th CPU this process may use (taskset, cgroup cpusets), not CPU number i.
        let allowed = allowed_cpus();
        let cpu = allowed
            .get(id % allowed.len().max(1))
            .copied()
            .unwrap_or(id);
        if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
            tracing::warn!(worker = id, "cannot pin to CPU {cpu}: {e:?}");
        }
    }
    let explicit = shared.settings.driver == DriverChoice::IoUring;
    let entries = shared.settings.ring_entries;
    let taskrun = shared.settings.uring_taskrun;
    let fut = worker_main(shared, listener, (stop, control), ready.clone());
    match driver {
        Driver::IoUring => {
            match build_uring(entries, taskrun, id) {
                Ok(mut rt) => rt.block_on(fut),
                Err(e) if explicit => {
                    // `--driver io-uring` means io_uring or nothing: start-up fails, saying why.
                    let why = format!(
                        "io_uring refused ({e}); raise RLIMIT_MEMLOCK or lower --ring-entries, or use --driver auto"
                    );
                    let _ = ready.send((id, Err(io::Error::new(e.kind(), why))));
                }
                Err(e) => {
                    // `auto` falls back (e.g. RLIMIT_MEMLOCK too low for the ring).
                    tracing::warn!(worker = id, "io_uring runtime refused ({e}); using epoll");
                    build_epoll(entries, fut, id, &ready);
                }
            }
        }
        Driver::Epoll => build_epoll(entries, fut, id, &ready),
    }
}

type UringRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// The worker's io_uring runtime. With `--uring-taskrun coop` a completion does not interrupt
/// the worker's core; it is handled at the worker's next system call (it makes one every few
/// microseconds while busy) or wait. A kernel without that flag (before 5.19) gets the default
/// ring instead.
fn build_uring(entries: u32, taskrun: TaskRun, id: usize) -> io::Result<UringRuntime> {
    let build = |urb: io_uring::Builder| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(urb)
            .enable_timer()
            .build()
    };
    if taskrun == TaskRun::Coop {
        let mut urb = io_uring::IoUring::builder();
        urb.setup_coop_taskrun();
        match build(urb) {
            Ok(rt) => return Ok(rt),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                tracing::info!(
                    worker = id,
                    "this kernel has no cooperative io_uring task running: --uring-taskrun signal"
                );
            }
            Err(e) => return Err(e),
        }
    }
    build(io_uring::IoUring::builder())
}

fn build_epoll(
    entries: u32,
    fut: impl Future<Output = ()>,
    id: usize,
    ready: &mpsc::Sender<(usize, io::Result<Driver>)>,
) {
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .with_entries(entries)
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(fut),
        Err(e) => {
            let _ = ready.send((id, Err(e)));
        }
    }
}

async fn worker_main<S: Service>(
    shared: WorkerShared<S>,
    listener: StdListener,
    (stop, control): (Arc<Stop>, Arc<Control>),
    ready: mpsc::Sender<(usize, io::Result<Driver>)>,
) {
    let id = shared.id;
    let driver = if monoio::utils::is_legacy() {
        Driver::Epoll
    } else {
        Driver::IoUring
    };
    if driver == Driver::Epoll
        && let Err(e) = listener.set_nonblocking(true)
    {
        let _ = ready.send((id, Err(e)));
        return;
    }
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send((id, Err(e)));
            return;
        }
    };
    tracing::info!(worker = id, driver = driver.name(), "worker listening");
    let _ = ready.send((id, Ok(driver)));
    drop(ready);
    let local_hub = LocalHub::new(shared.hub.clone(), id);
    let per_ip = shared.tables.addresses.clone();
    let worker = Rc::new(worker::Worker::new(shared, local_hub));
    let timers = worker.clone();
    monoio::spawn(async move { timers.timers().drive().await });
    let inbox = worker.clone();
    monoio::spawn(async move { inbox.drain_inbox().await });
    if id == 0 && per_ip.is_limited() {
        // Addresses whose connections all ended are forgotten once their bucket is full again.
        let clock = worker.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(Duration::from_secs(1)).await;
                per_ip.sweep(clock.clock_ms());
            }
        });
    }
    let controlled = worker.clone();
    monoio::spawn(async move {
        loop {
            let (settings, probe) = control.next().await;
            if let Some(settings) = settings {
                controlled.replace_settings(&settings);
                tracing::debug!(worker = controlled.id(), "reloaded settings in force");
            }
            for job in control.take_jobs() {
                let closed = controlled.revoke(&job);
                job.done.report(closed);
            }
            control.acknowledge(probe);
        }
    });
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = stop.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(conn::serve(worker.clone(), stream, peer));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning on the error.
                tracing::warn!(worker = id, "accept failed: {e}");
                monoio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    // Connections still waiting in the backlog are refused from here on.
    drop(listener);
    worker.drain().await;
}

/// A one-shot stop signal that a plain thread can raise and a worker can await.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Stop {
    fn trigger(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.raised.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.raised.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// The production service: docs/protocol.md's gateway, one `Session` per connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gateway;

impl Service for Gateway {
    type Handler = Session;

    fn handler(&self) -> Session {
        Session::new()
    }
}
