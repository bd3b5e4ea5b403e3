//! `echo`: C connections, each the only member of its own group `echo.<i>`, each sending M
//! messages with W in flight; every message comes back (a group delivers to the sender too).
//! Reports messages/s and the round-trip latency; checks every message's (client, sequence).

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::client::{self, Conn};
use crate::harness::{self, Ctx, Outcome, Progress, Shared, bump};
use crate::payload::{self, Stamp, Tracker};
use crate::report::{Latency, Report};
use crate::{Common, Target};

/// `echo` options.
#[derive(clap::Args, Debug, Clone)]
pub struct EchoOpt {
    /// Connections, each in its own group.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Messages each connection keeps in flight.
    #[arg(long, default_value_t = 8)]
    pub in_flight: u64,
    /// Messages each connection sends.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Extra bytes of padding in every message's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Upgrades in flight at once per client worker while connecting.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

/// Runs the scenario; fails on any failure, loss, duplicate, reordering, or the deadline.
pub fn run(
    common: &Common,
    target: &Target,
    opt: &EchoOpt,
    timeout: Duration,
) -> anyhow::Result<()> {
    anyhow::ensure!(opt.in_flight >= 1, "--in-flight must be at least 1");
    let start = Instant::now();
    let deadline = start + timeout;
    let shared = Shared::new(common.workers);
    let (target2, common2, opt2) = (target.clone(), common.clone(), opt.clone());
    let threads = harness::spawn_workers(common, &shared, deadline, move |ctx| {
        worker(ctx, target2.clone(), common2.clone(), opt2.clone())
    })?;
    let conns = opt.connections as u64;
    let mut progress = Progress::new(start);
    let (ready_outcome, mark0) =
        harness::start_together(&mut progress, &shared, common, conns, deadline, &threads);
    let total = conns * opt.messages;
    let outcome = if ready_outcome != Outcome::Done {
        ready_outcome
    } else {
        harness::wait_for(
            &mut progress,
            "echoed",
            total,
            deadline,
            &threads,
            || shared.sum(|s| &s.done),
            || shared.sum(|s| &s.done) >= total,
        )
    };
    let finished = outcome == Outcome::Done;
    let (mark1, hist) = harness::end_phase(&mut progress, &shared, common, threads, finished);

    let secs = mark1.at.duration_since(mark0.at).as_secs_f64();
    let done = shared.sum(|s| &s.done);
    let failed = shared.sum(|s| &s.failed);
    let mut r = Report::new("echo");
    r.row("connections", "connections", opt.connections);
    r.row("in_flight", "in flight per connection", opt.in_flight);
    r.row(
        "messages_per_connection",
        "messages per connection",
        opt.messages,
    );
    r.row("payload_bytes", "padding bytes", opt.payload_bytes);
    r.row("workers", "client workers", common.workers);
    r.row("joined", "connections joined", shared.sum(|s| &s.joined));
    r.row("failed", "failed", failed);
    r.row("sent", "messages sent", shared.sum(|s| &s.sent));
    r.row("echoed", "messages echoed", done);
    // Everything sent and not echoed by the end (a run that timed out counts what was still in
    // flight, too).
    let lost = shared.sum(|s| &s.sent).saturating_sub(done);
    let duplicated = shared.sum(|s| &s.duplicated);
    let reordered = shared.sum(|s| &s.reordered);
    let unexpected = shared.sum(|s| &s.unexpected);
    r.row("lost", "lost (sent, not echoed)", lost);
    r.row("duplicated", "duplicated", duplicated);
    r.row("reordered", "reordered", reordered);
    r.row("unexpected", "unexpected", unexpected);
    r.row("closed", "closed cleanly", shared.sum(|s| &s.closed));
    r.row("seconds", "seconds", secs);
    r.row("messages_per_second", "messages/s", done as f64 / secs);
    r.latency("send to echo (round trip)", Latency::from_ns(&hist));
    r.cpu(mark0.cpu_until(&mark1, common.workers));
    if outcome != Outcome::Done {
        let why = outcome.why(timeout);
        r.error(format!("{why} with {done} of {total} messages echoed"));
    }
    let first = shared.first_error().unwrap_or_default();
    if failed > 0 {
        r.error(format!("{failed} failures (first: {first})"));
    }
    r.error_if(lost, "lost");
    r.error_if(duplicated, "duplicated");
    r.error_if(reordered, "reordered");
    r.error_if(unexpected, "unexpected");
    r.finish(common.json)
}

async fn worker(ctx: Rc<Ctx>, target: Target, common: Common, opt: EchoOpt) {
    let target = Rc::new(target);
    let ids: Vec<usize> = (ctx.index..opt.connections).step_by(ctx.workers).collect();
    let conns = harness::open_all(
        &ids,
        opt.concurrency,
        |id| {
            let (target, origin, secret) =
                (target.clone(), common.origin.clone(), common.secret.clone());
            async move {
                let group = format!("echo.{id}");
                let user = format!("echo-{id}");
                let source = harness::source_for(id);
                let groups = ["echo.*"];
                client::open_as(
                    &target,
                    &origin,
                    &secret,
                    source,
                    &user,
                    &groups,
                    Some(&group),
                )
                .await
            }
        },
        |_| bump(&ctx.slot().joined, 1),
        |id, e| ctx.fail(&format!("connection {id}"), e),
    )
    .await;
    let mut handles = Vec::with_capacity(conns.len());
    for (id, conn) in conns {
        let (ctx, opt) = (ctx.clone(), opt.clone());
        handles.push(monoio::spawn(async move {
            ctx.shared.gate.wait().await;
            match echo(&ctx, &opt, id, conn).await {
                Ok(()) => bump(&ctx.slot().closed, 1),
                Err(e) => ctx.fail(&format!("connection {id}"), e),
            }
        }));
    }
    for h in handles {
        h.await;
    }
}

/// One connection's closed loop: keep `in_flight` messages out, read what comes back.
async fn echo(ctx: &Ctx, opt: &EchoOpt, id: usize, mut conn: Conn) -> std::io::Result<()> {
    let group = format!("echo.{id}");
    let client = id as u64;
    let mut tracker = Tracker::new(client, 1, opt.messages);
    let (mut seq, mut out, mut data, mut pongs) = (0u64, Vec::new(), Vec::new(), Vec::new());
    while !tracker.complete() {
        let room = opt.in_flight.saturating_sub(seq - tracker.distinct());
        let n = room.min(opt.messages - seq);
        if n > 0 {
            let t_ns = ctx.shared.now_ns();
            for _ in 0..n {
                data.clear();
                payload::write_send(
                    &mut data,
                    &group,
                    &Stamp { client, seq, t_ns },
                    opt.payload_bytes,
                );
                client::frame_into(&mut out, 0x1, &data);
                seq += 1;
            }
            out = client::write_all(&mut conn.stream, out).await?;
            out.clear();
            bump(&ctx.slot().sent, n);
        }
        conn.fill().await?;
        let now = ctx.shared.now_ns();
        let mut echoed = 0;
        let drained = client::drain_frames(&mut conn.rb, &mut pongs, |p| {
            if ctx.receive(&mut tracker, &group, p, now, true).is_some() {
                echoed += 1;
            }
        });
        bump(&ctx.slot().done, echoed);
        drained?;
        client::answer_pings(&mut conn.stream, &mut pongs).await?;
    }
    conn.close().await
}
