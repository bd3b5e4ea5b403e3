//! `idle`: open N authenticated connections, let them sit, and report how much the server's
//! resident memory grew per connection (`--server-pid`). Then every connection proves it is
//! still alive with a ping/pong and closes cleanly; a dead one is an error in the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::client::{self, Conn};
use crate::harness::{self, Gate, source_for};
use crate::{Common, Target, token};

/// `idle` options.
#[derive(clap::Args, Debug, Clone)]
pub struct IdleOpt {
    /// Connections to hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Upgrades in flight at once per client worker.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Milliseconds to let the server settle before the second RSS reading.
    #[arg(long, default_value_t = 1_000)]
    pub settle_ms: u64,
}

#[derive(Default)]
struct Tally {
    opened: AtomicUsize,
    failed: AtomicUsize,
    alive: AtomicUsize,
    closed: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("tally lock");
        if first.is_none() {
            *first = Some(format!("{what}: {e}"));
        }
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib = line.split_whitespace().nth(1).context("bad VmRSS line")?;
    Ok(kib.parse()?)
}

/// Runs the scenario; fails when any connection failed or the deadline passed.
pub fn run(
    common: &Common,
    target: &Target,
    opt: &IdleOpt,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let before = common.server_pid.map(rss_kib).transpose()?;
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Gate::default());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let workers = common.workers;
    let mut threads = Vec::new();
    for w in 0..workers {
        // Connection i goes to worker i % workers; its source address comes from source_for(i).
        let ids: Vec<usize> = (w..opt.connections).step_by(workers).collect();
        let (tally, gate, target, common, opt) = (
            tally.clone(),
            gate.clone(),
            target.clone(),
            common.clone(),
            opt.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("load-{w}"))
                .spawn(move || {
                    if common.pin_cores {
                        let _ = monoio::utils::bind_to_cpu_set([common.first_cpu + w]);
                    }
                    let mut rt = crate::harness::runtime(common.driver).expect("client runtime");
                    rt.block_on(worker(ids, tally, gate, target, common, opt, now));
                })?,
        );
    }
    // Phase 1: wait until every connection is open or failed, within the deadline.
    while tally.opened.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed)
        < opt.connections
    {
        if started.elapsed() > deadline {
            gate.open();
            bail!(
                "deadline passed with {} of {} connections open",
                tally.opened.load(Ordering::Relaxed),
                opt.connections
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let opened = tally.opened.load(Ordering::Relaxed);
    let connect_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(opt.settle_ms));
    let after = common.server_pid.map(rss_kib).transpose()?;
    // Phase 2: prove every connection alive, then close them all.
    gate.open();
    for t in threads {
        let _ = t.join();
    }
    let alive = tally.alive.load(Ordering::Relaxed);
    let closed = tally.closed.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if opened > 0 => {
            Some((a.saturating_sub(b)) as f64 * 1024.0 / opened as f64)
        }
        _ => None,
    };
    if common.json {
        let report = serde_json::json!({
            "scenario": "idle", "connections": opt.connections, "opened": opened, "alive": alive,
            "closed": closed, "failed": failed, "connect_seconds": connect_secs,
            "server_rss_kib_before": before, "server_rss_kib_after": after,
            "server_rss_bytes_per_connection": per_conn,
        });
        println!("{report}");
    } else {
        println!(
            "idle: {opened}/{} connections opened in {connect_secs:.2} s; {alive} answered a ping after the idle period; {closed} closed cleanly; {failed} failed",
            opt.connections
        );
        if let (Some(b), Some(a), Some(p)) = (before, after, per_conn) {
            println!(
                "server RSS: {b} KiB before, {a} KiB with {opened} idle connections -> {p:.0} bytes per connection"
            );
        }
    }
    if failed > 0 || alive < opened {
        let first = tally
            .first_error
            .lock()
            .expect("tally lock")
            .clone()
            .unwrap_or_default();
        bail!(
            "{failed} connections failed, {} did not answer ({first})",
            opened - alive
        );
    }
    Ok(())
}

async fn worker(
    ids: Vec<usize>,
    tally: Arc<Tally>,
    gate: Arc<Gate>,
    target: Target,
    common: Common,
    opt: IdleOpt,
    now: u64,
) {
    let target = std::rc::Rc::new(target);
    let conns = harness::open_all(
        &ids,
        opt.concurrency,
        |id| {
            let (target, origin, secret) =
                (target.clone(), common.origin.clone(), common.secret.clone());
            async move {
                let stream = client::connect(target.addr, source_for(id)).await?;
                let token = token::mint(secret.as_bytes(), &format!("idle-{id}"), now, 3600, &[]);
                Conn::open(stream, &target, &origin, &token).await
            }
        },
        |_| {
            tally.opened.fetch_add(1, Ordering::Relaxed);
        },
        |_, e| tally.fail("open", e),
    )
    .await;
    gate.wait().await;
    let mut handles = Vec::with_capacity(conns.len());
    for (id, mut conn) in conns {
        let tally = tally.clone();
        handles.push(monoio::spawn(async move {
            let payload = id.to_be_bytes();
            if let Err(e) = conn.send(0x9, &payload).await {
                return tally.fail("ping", e);
            }
            match conn.next_frame().await {
                Ok((0xa, p)) if p == payload => {
                    tally.alive.fetch_add(1, Ordering::Relaxed);
                }
                Ok((op, _)) => {
                    return tally.fail("ping", format!("expected a pong, got opcode {op}"));
                }
                Err(e) => return tally.fail("ping", e),
            }
            match conn.close().await {
                Ok(()) => {
                    tally.closed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tally.fail("close", e),
            }
        }));
    }
    for h in handles {
        h.await;
    }
}
