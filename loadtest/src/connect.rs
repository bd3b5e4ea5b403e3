//! `connect`: N whole sessions at concurrency K, each TCP connect → upgrade → authenticate →
//! auth OK → Close answered by Close. Reports sessions/s and the latency from the start of the
//! connect to the auth OK.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::client::{self, Conn};
use crate::harness::{self, Ctx, Mark, Outcome, Progress, Shared, bump};
use crate::report::{Latency, Report};
use crate::{Common, Target, token};

/// `connect` options.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectOpt {
    /// Sessions to complete.
    #[arg(long, default_value_t = 20_000)]
    pub sessions: usize,
    /// Sessions in progress at once, over all workers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Runs the scenario; fails when a session failed or the deadline passed.
pub fn run(
    common: &Common,
    target: &Target,
    opt: &ConnectOpt,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let deadline = start + timeout;
    let shared = Shared::new(common.workers);
    let mark0 = Mark::now(common);
    let (target2, common2, opt2) = (target.clone(), common.clone(), opt.clone());
    let threads = harness::spawn_workers(common, &shared, deadline, move |ctx| {
        worker(ctx, target2.clone(), common2.clone(), opt2.clone())
    })?;
    let total = opt.sessions as u64;
    let finished = || shared.sum(|s| &s.done) + shared.sum(|s| &s.failed);
    let mut progress = Progress::new(start);
    let outcome = harness::wait_for(
        &mut progress,
        "sessions",
        total,
        deadline,
        &threads,
        || shared.sum(|s| &s.done),
        || finished() >= total,
    );
    // Nothing to stop early: every session ends by itself or with its worker's deadline.
    let (mark1, hist) = harness::end_phase(&mut progress, &shared, common, threads, true);

    let secs = mark1.at.duration_since(mark0.at).as_secs_f64();
    let done = shared.sum(|s| &s.done);
    let failed = shared.sum(|s| &s.failed);
    let mut r = Report::new("connect");
    r.row("sessions", "sessions", opt.sessions);
    r.row("concurrency", "concurrency", opt.concurrency);
    r.row("workers", "client workers", common.workers);
    r.row("authenticated", "authenticated", shared.sum(|s| &s.opened));
    r.row("completed", "completed (closed cleanly)", done);
    r.row("failed", "failed", failed);
    r.row("seconds", "seconds", secs);
    r.row("sessions_per_second", "sessions/s", done as f64 / secs);
    r.latency("connect start to auth OK", Latency::from_ns(&hist));
    r.cpu(mark0.cpu_until(&mark1, common.workers));
    if outcome != Outcome::Done {
        let why = outcome.why(timeout);
        r.error(format!("{why} with {done} of {total} sessions done"));
    }
    if failed > 0 {
        let first = shared.first_error().unwrap_or_default();
        r.error(format!("{failed} sessions failed (first: {first})"));
    }
    r.finish(common.json)
}

async fn worker(ctx: Rc<Ctx>, target: Target, common: Common, opt: ConnectOpt) {
    // Session i runs on worker i % workers; the concurrency is split the same way.
    let ids: Rc<Vec<usize>> = Rc::new((ctx.index..opt.sessions).step_by(ctx.workers).collect());
    let extra = usize::from(ctx.index < opt.concurrency % ctx.workers);
    let lanes = (opt.concurrency / ctx.workers + extra).max(1);
    let next = Rc::new(Cell::new(0usize));
    let target = Rc::new(target);
    let common = Rc::new(common);
    let mut handles = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (ctx, ids, next, target, common) = (
            ctx.clone(),
            ids.clone(),
            next.clone(),
            target.clone(),
            common.clone(),
        );
        handles.push(monoio::spawn(async move {
            loop {
                let i = next.get();
                let Some(&id) = ids.get(i) else { break };
                next.set(i + 1);
                match session(&ctx, &target, &common, id).await {
                    Ok(()) => bump(&ctx.slot().done, 1),
                    Err(e) => ctx.fail(&format!("session {id}"), e),
                }
            }
        }));
    }
    for h in handles {
        h.await;
    }
}

async fn session(ctx: &Ctx, target: &Target, common: &Common, id: usize) -> std::io::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = token::mint(
        common.secret.as_bytes(),
        &format!("conn-{id}"),
        now,
        3600,
        &[],
    );
    let t0 = ctx.shared.now_ns();
    let stream = client::connect(target.addr, harness::source_for(id)).await?;
    let conn = Conn::open(stream, target, &common.origin, &token).await?;
    ctx.record_since(t0, ctx.shared.now_ns());
    bump(&ctx.slot().opened, 1);
    conn.close().await?;
    bump(&ctx.slot().closed, 1);
    Ok(())
}
