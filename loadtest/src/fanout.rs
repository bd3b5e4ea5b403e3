//! `fanout` and `publish`: N members join one group; once every one has joined, P publishers
//! each send M messages, at `--rate` per second or flat out, with at most `--in-flight`
//! unacknowledged. `fanout` publishers are WebSocket members themselves (only members may
//! send) and count a publish acknowledged when their own copy comes back; `publish` feeds the
//! group through `POST /api/publish`, pipelined on one keep-alive HTTP connection per
//! publisher, and counts a publish acknowledged when its 202 has arrived and a witness member
//! (member p for publisher p, on the same worker) has received it. Deliveries and latency are
//! measured at the N members; publishers' own copies are checked but counted apart.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use monoio::net::TcpStream;

use crate::client::{self, Conn, ReadBuf};
use crate::harness::{self, Ctx, Notify, Outcome, Progress, Shared, bump};
use crate::payload::{self, Stamp, Tracker};
use crate::report::{Latency, Report};
use crate::{Common, Target, http};

/// How long receipts may stand still after every publisher stopped sending.
const STALL: Duration = Duration::from_secs(2);

/// Options `fanout` and `publish` share.
#[derive(clap::Args, Debug, Clone)]
pub struct FanoutOpt {
    /// Members of the group (receivers).
    #[arg(long, default_value_t = 1_000)]
    pub members: usize,
    /// Publishers (each its own connection).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages each publisher sends.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Publishes each publisher may have unacknowledged.
    #[arg(long, default_value_t = 32)]
    pub in_flight: u64,
    /// Messages per second per publisher (0: flat out, limited by --in-flight).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Extra bytes of padding in every message's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// The group.
    #[arg(long, default_value = "load.fanout")]
    pub group: String,
    /// Upgrades in flight at once per client worker while connecting.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

/// `publish` options.
#[derive(clap::Args, Debug, Clone)]
pub struct PublishOpt {
    #[command(flatten)]
    pub fanout: FanoutOpt,
    /// HTTP API key (or WSGATE_API_KEY).
    #[arg(long, env = "WSGATE_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

/// How publishes reach the group.
#[derive(Debug, Clone)]
pub enum Feed {
    /// `send` on WebSocket connections that are members.
    WebSocket,
    /// `POST /api/publish` with this API key.
    Api(String),
}

/// One publisher's window, shared with whoever acknowledges its publishes.
struct Ack {
    /// Fanout: own copies received in order. Publish: API responses received.
    acked: Cell<u64>,
    /// Publish: the witness member's in-order receipts (`u64::MAX`: no witness).
    witnessed: Cell<u64>,
    /// Stop sending (the acknowledging side failed).
    stop: Cell<bool>,
    /// Wakes the sending task.
    notify: Notify,
}

impl Ack {
    fn new() -> Rc<Self> {
        Rc::new(Self {
            acked: Cell::new(0),
            witnessed: Cell::new(u64::MAX),
            stop: Cell::new(false),
            notify: Notify::default(),
        })
    }

    fn done(&self) -> u64 {
        self.acked.get().min(self.witnessed.get())
    }
}

/// Runs `fanout` (WebSocket publishers) or `publish` (API publishers).
pub fn run(
    common: &Common,
    target: &Target,
    opt: &FanoutOpt,
    feed: Feed,
    timeout: Duration,
) -> anyhow::Result<()> {
    anyhow::ensure!(opt.in_flight >= 1, "--in-flight must be at least 1");
    anyhow::ensure!(opt.publishers >= 1, "--publishers must be at least 1");
    anyhow::ensure!(opt.rate >= 0.0, "--rate must not be negative");
    if matches!(feed, Feed::Api(_)) {
        anyhow::ensure!(
            opt.members >= opt.publishers,
            "publish needs at least as many members as publishers (member p witnesses publisher p)"
        );
    }
    let name = match feed {
        Feed::WebSocket => "fanout",
        Feed::Api(_) => "publish",
    };
    let start = Instant::now();
    let deadline = start + timeout;
    let shared = Shared::new(common.workers);
    let (target2, common2, opt2, feed2) =
        (target.clone(), common.clone(), opt.clone(), feed.clone());
    let threads = harness::spawn_workers(common, &shared, deadline, move |ctx| {
        worker(
            ctx,
            target2.clone(),
            common2.clone(),
            opt2.clone(),
            feed2.clone(),
        )
    })?;
    let conns = (opt.members + opt.publishers) as u64;
    let mut progress = Progress::new(start);
    let (ready_outcome, mark0) =
        harness::start_together(&mut progress, &shared, common, conns, deadline, &threads);
    let (p, m) = (opt.publishers as u64, opt.messages);
    let expected = opt.members as u64 * p * m;
    let expected_acks = match feed {
        Feed::WebSocket => p * p * m,
        Feed::Api(_) => p * m,
    };
    // Once every publisher has stopped sending, a run whose receipts stop moving for
    // STALL is over: what is missing by then will not come.
    let mut last = (0, Instant::now());
    let mut stalled = false;
    let outcome = if ready_outcome != Outcome::Done {
        ready_outcome
    } else {
        harness::wait_for(
            &mut progress,
            "deliveries",
            expected,
            deadline,
            &threads,
            || shared.sum(|s| &s.done),
            || {
                let (done, acked) = (shared.sum(|s| &s.done), shared.sum(|s| &s.acked));
                if done >= expected && acked >= expected_acks {
                    return true;
                }
                if shared.sum(|s| &s.feeds_ended) < p || done + acked != last.0 {
                    last = (done + acked, Instant::now());
                } else if last.1.elapsed() >= STALL {
                    stalled = true;
                    return true;
                }
                false
            },
        )
    };
    let finished = outcome == Outcome::Done && !stalled;
    let (mark1, hist) = harness::end_phase(&mut progress, &shared, common, threads, finished);

    let secs = mark1.at.duration_since(mark0.at).as_secs_f64();
    let done = shared.sum(|s| &s.done);
    let acked = shared.sum(|s| &s.acked);
    let sent = shared.sum(|s| &s.sent);
    let failed = shared.sum(|s| &s.failed);
    let mut r = Report::new(name);
    r.row("members", "members", opt.members);
    r.row("publishers", "publishers", opt.publishers);
    r.row("messages_per_publisher", "messages per publisher", m);
    r.row("in_flight", "in flight per publisher", opt.in_flight);
    r.row("rate", "rate per publisher (0: flat out)", opt.rate);
    r.row("payload_bytes", "padding bytes", opt.payload_bytes);
    r.row("workers", "client workers", common.workers);
    r.row("joined", "connections ready", shared.sum(|s| &s.joined));
    r.row("failed", "failed", failed);
    r.row("published", "published", sent);
    r.row("deliveries", "deliveries at members", done);
    r.row("expected_deliveries", "expected deliveries", expected);
    // Everything published (API: accepted with 202) and not delivered by the end (a run that
    // timed out counts what was still in flight, too).
    let accepted = match feed {
        Feed::WebSocket => sent,
        Feed::Api(_) => acked,
    };
    let lost = (opt.members as u64 * accepted).saturating_sub(done);
    let duplicated = shared.sum(|s| &s.duplicated);
    let reordered = shared.sum(|s| &s.reordered);
    let unexpected = shared.sum(|s| &s.unexpected);
    r.row("lost", "lost (published, not delivered)", lost);
    r.row("duplicated", "duplicated", duplicated);
    r.row("reordered", "reordered", reordered);
    r.row("unexpected", "unexpected", unexpected);
    let missing_acks = match feed {
        Feed::WebSocket => p * sent,
        Feed::Api(_) => sent,
    }
    .saturating_sub(acked);
    match feed {
        Feed::WebSocket => r.row("publisher_copies", "copies at publishers", acked),
        Feed::Api(_) => r.row("api_responses", "API responses 202", acked),
    }
    r.row("closed", "closed cleanly", shared.sum(|s| &s.closed));
    r.row("seconds", "seconds", secs);
    r.row("publishes_per_second", "publishes/s", sent as f64 / secs);
    r.row("deliveries_per_second", "deliveries/s", done as f64 / secs);
    r.latency("publish to delivery, every member", Latency::from_ns(&hist));
    r.cpu(mark0.cpu_until(&mark1, common.workers));
    if stalled {
        r.error(format!(
            "stopped {} s after the last publisher stopped sending, with {done} of {expected} deliveries",
            STALL.as_secs()
        ));
    } else if outcome != Outcome::Done {
        let why = outcome.why(timeout);
        r.error(format!("{why} with {done} of {expected} deliveries"));
    }
    if failed > 0 {
        let first = shared.first_error().unwrap_or_default();
        r.error(format!("{failed} failures (first: {first})"));
    }
    r.error_if(lost, "lost");
    r.error_if(duplicated, "duplicated");
    r.error_if(reordered, "reordered");
    r.error_if(unexpected, "unexpected");
    match feed {
        Feed::WebSocket => r.error_if(missing_acks, "copies missing at publishers"),
        Feed::Api(_) => r.error_if(missing_acks, "API requests without a 202"),
    }
    r.finish(common.json)
}

enum Opened {
    Member(usize, Conn),
    WsPublisher(usize, Conn),
    ApiPublisher(usize, TcpStream),
}

async fn open(
    target: Rc<Target>,
    common: Rc<Common>,
    opt: Rc<FanoutOpt>,
    api: bool,
    role: (bool, usize),
) -> io::Result<Opened> {
    let group = opt.group.as_str();
    let (origin, secret) = (common.origin.as_str(), common.secret.as_str());
    match role {
        (false, i) => {
            let src = harness::source_for(i);
            let user = format!("member-{i}");
            let conn =
                client::open_as(&target, origin, secret, src, &user, &[group], Some(group)).await?;
            Ok(Opened::Member(i, conn))
        }
        (true, p) if !api => {
            let src = harness::source_for(opt.members + p);
            let user = format!("publisher-{p}");
            let conn =
                client::open_as(&target, origin, secret, src, &user, &[group], Some(group)).await?;
            Ok(Opened::WsPublisher(p, conn))
        }
        (true, p) => {
            let stream = client::connect(target.addr, harness::source_for(opt.members + p)).await?;
            stream.set_nodelay(true)?;
            Ok(Opened::ApiPublisher(p, stream))
        }
    }
}

async fn worker(ctx: Rc<Ctx>, target: Target, common: Common, opt: FanoutOpt, feed: Feed) {
    let (target, common, opt) = (Rc::new(target), Rc::new(common), Rc::new(opt));
    let api = matches!(feed, Feed::Api(_));
    // Member i and publisher p run on workers i % workers and p % workers, so member p (the
    // witness of API publisher p) shares its publisher's worker.
    let mut roles: Vec<(bool, usize)> = (ctx.index..opt.publishers)
        .step_by(ctx.workers)
        .map(|p| (true, p))
        .collect();
    roles.extend(
        (ctx.index..opt.members)
            .step_by(ctx.workers)
            .map(|i| (false, i)),
    );
    let acks: HashMap<usize, Rc<Ack>> = roles
        .iter()
        .filter(|r| r.0)
        .map(|&(_, p)| (p, Ack::new()))
        .collect();
    let opened = harness::open_all(
        &roles,
        opt.concurrency,
        |role| open(target.clone(), common.clone(), opt.clone(), api, role),
        |_| bump(&ctx.slot().joined, 1),
        |(publisher, n), e| {
            let who = if publisher { "publisher" } else { "member" };
            ctx.fail(&format!("{who} {n}"), e);
            if publisher {
                bump(&ctx.slot().feeds_ended, 1);
            }
        },
    )
    .await;
    let mut handles = Vec::with_capacity(opened.len());
    for (_, o) in opened {
        let (ctx, opt, target, feed) = (ctx.clone(), opt.clone(), target.clone(), feed.clone());
        let witness = match (&o, api) {
            (Opened::Member(i, _), true) => acks.get(i).map(|a| {
                a.witnessed.set(0);
                (*i as u64, a.clone())
            }),
            _ => None,
        };
        let ack = match &o {
            Opened::WsPublisher(p, _) | Opened::ApiPublisher(p, _) => acks.get(p).cloned(),
            Opened::Member(..) => None,
        };
        handles.push(monoio::spawn(async move {
            let (who, res) = match o {
                Opened::Member(i, conn) => (
                    format!("member {i}"),
                    member(&ctx, &opt, conn, witness).await,
                ),
                Opened::WsPublisher(p, conn) => {
                    let ack = ack.expect("an ack per local publisher");
                    (
                        format!("publisher {p}"),
                        ws_publisher(&ctx, &opt, p, conn, ack).await,
                    )
                }
                Opened::ApiPublisher(p, stream) => {
                    let ack = ack.expect("an ack per local publisher");
                    let key = match &feed {
                        Feed::Api(k) => k.clone(),
                        Feed::WebSocket => String::new(),
                    };
                    let res = api_publisher(&ctx, &opt, &target.host, &key, p, stream, ack).await;
                    (format!("API publisher {p}"), res)
                }
            };
            match res {
                Ok(()) => bump(&ctx.slot().closed, 1),
                Err(e) => ctx.fail(&who, e),
            }
        }));
    }
    for h in handles {
        h.await;
    }
}

/// A member: read until every publisher's every message has arrived, then close.
/// A member that witnesses API publisher p gets `(p, its window)`.
async fn member(
    ctx: &Ctx,
    opt: &FanoutOpt,
    mut conn: Conn,
    witness: Option<(u64, Rc<Ack>)>,
) -> io::Result<()> {
    let mut tracker = Tracker::new(0, opt.publishers, opt.messages);
    conn.set_read_chunk(16 * 1024);
    let res = async {
        let mut pongs = Vec::new();
        while !tracker.complete() {
            conn.fill().await?;
            let now = ctx.shared.now_ns();
            let mut delivered = 0;
            let drained = client::drain_frames(&mut conn.rb, &mut pongs, |p| {
                if ctx
                    .receive(&mut tracker, &opt.group, p, now, true)
                    .is_some()
                {
                    delivered += 1;
                }
            });
            bump(&ctx.slot().done, delivered);
            drained?;
            if let Some((p, w)) = &witness {
                w.witnessed.set(tracker.contiguous(*p));
                w.notify.notify();
            }
            client::answer_pings(&mut conn.stream, &mut pongs).await?;
        }
        Ok::<_, io::Error>(())
    }
    .await;
    if let Some((_, w)) = &witness {
        w.witnessed.set(u64::MAX);
        w.notify.notify();
    }
    res?;
    conn.close().await
}

/// How a publisher writes one publish.
enum Encode<'a> {
    /// A masked `send` frame.
    Send,
    /// A `POST /api/publish` request to `host` with `key`.
    Post { host: &'a str, key: &'a str },
}

/// Sends publisher `p`'s messages on `w` once the gate opens, keeping at most `--in-flight`
/// unacknowledged and, with `--rate`, no faster than the schedule; hands `w` back.
async fn feed<W: AsyncWriteRent>(
    ctx: &Ctx,
    opt: &FanoutOpt,
    p: usize,
    mut w: W,
    ack: &Ack,
    encode: Encode<'_>,
) -> io::Result<W> {
    ctx.shared.gate.wait().await;
    let t0 = Instant::now();
    let (client, mut seq) = (p as u64, 0u64);
    let (mut out, mut data) = (Vec::new(), Vec::new());
    while seq < opt.messages {
        let window = || opt.in_flight.saturating_sub(seq.saturating_sub(ack.done()));
        ack.notify
            .wait_until(|| ack.stop.get() || window() > 0)
            .await;
        if ack.stop.get() {
            break;
        }
        let mut n = window().min(opt.messages - seq);
        if opt.rate > 0.0 {
            let due_at = t0 + Duration::from_secs_f64(seq as f64 / opt.rate);
            if due_at > Instant::now() {
                monoio::time::sleep_until(monoio::time::Instant::from_std(due_at)).await;
            }
            let due = (t0.elapsed().as_secs_f64() * opt.rate) as u64 + 1;
            n = n.min(due.saturating_sub(seq).max(1));
        }
        let t_ns = ctx.shared.now_ns();
        for _ in 0..n {
            let stamp = Stamp { client, seq, t_ns };
            data.clear();
            match encode {
                Encode::Send => {
                    payload::write_send(&mut data, &opt.group, &stamp, opt.payload_bytes);
                    client::frame_into(&mut out, 0x1, &data);
                }
                Encode::Post { host, key } => {
                    payload::write_publish(&mut data, &opt.group, &stamp, opt.payload_bytes);
                    http::write_request(&mut out, host, key, &data);
                }
            }
            seq += 1;
        }
        out = client::write_all(&mut w, out).await?;
        out.clear();
        bump(&ctx.slot().sent, n);
    }
    Ok(w)
}

/// A WebSocket publisher: one task sends, this one reads every copy (its own acknowledge its
/// publishes), then closes.
async fn ws_publisher(
    ctx: &Rc<Ctx>,
    opt: &Rc<FanoutOpt>,
    p: usize,
    conn: Conn,
    ack: Rc<Ack>,
) -> io::Result<()> {
    let (mut reader, writer) = conn.into_split();
    let sender = {
        let (ctx, opt, ack) = (ctx.clone(), opt.clone(), ack.clone());
        monoio::spawn(async move {
            let res = feed(&ctx, &opt, p, writer, &ack, Encode::Send).await;
            bump(&ctx.slot().feeds_ended, 1);
            res
        })
    };
    let mut tracker = Tracker::new(0, opt.publishers, opt.messages);
    let res = async {
        // A publisher sends all the time, so the server never pings it; Pings are not answered.
        let mut pongs = Vec::new();
        while !tracker.complete() {
            reader.fill().await?;
            let now = ctx.shared.now_ns();
            let mut copies = 0;
            let drained = client::drain_frames(&mut reader.rb, &mut pongs, |payload| {
                if ctx
                    .receive(&mut tracker, &opt.group, payload, now, false)
                    .is_some()
                {
                    copies += 1;
                }
            });
            pongs.clear();
            bump(&ctx.slot().acked, copies);
            ack.acked.set(tracker.contiguous(p as u64));
            ack.notify.notify();
            drained?;
        }
        Ok::<_, io::Error>(())
    }
    .await;
    if res.is_err() {
        ack.stop.set(true);
        ack.notify.notify();
    }
    let mut writer = sender.await?;
    res?;
    client::close_split(&mut reader, &mut writer).await
}

/// An API publisher: one task sends pipelined requests, this one reads the responses.
async fn api_publisher(
    ctx: &Rc<Ctx>,
    opt: &Rc<FanoutOpt>,
    host: &str,
    key: &str,
    p: usize,
    stream: TcpStream,
    ack: Rc<Ack>,
) -> io::Result<()> {
    let (mut reader, writer) = stream.into_split();
    let sender = {
        let (ctx, opt, ack) = (ctx.clone(), opt.clone(), ack.clone());
        let (host, key) = (host.to_owned(), key.to_owned());
        monoio::spawn(async move {
            let encode = Encode::Post {
                host: &host,
                key: &key,
            };
            let res = feed(&ctx, &opt, p, writer, &ack, encode).await;
            bump(&ctx.slot().feeds_ended, 1);
            res
        })
    };
    let res = responses(ctx, opt.messages, &mut reader, &ack).await;
    if res.is_err() {
        ack.stop.set(true);
        ack.notify.notify();
    }
    drop(sender.await?);
    res
}

/// Reads `count` responses, each of which must be 202.
async fn responses<R: AsyncReadRent>(
    ctx: &Ctx,
    count: u64,
    r: &mut R,
    ack: &Ack,
) -> io::Result<()> {
    let mut rb = ReadBuf::new(16 * 1024);
    let mut answered = 0;
    while answered < count {
        rb.fill(r).await?;
        let before = answered;
        while let Some(resp) = http::parse_response(rb.pending()).map_err(client::err)? {
            if resp.status != 202 {
                let body = String::from_utf8_lossy(&rb.pending()[resp.body_start..resp.len]);
                return Err(client::err(format!(
                    "publish answered {}: {body}",
                    resp.status
                )));
            }
            if resp.close && answered + 1 < count {
                return Err(client::err("server closed the API connection"));
            }
            rb.consume(resp.len);
            answered += 1;
        }
        bump(&ctx.slot().acked, answered - before);
        ack.acked.set(answered);
        ack.notify.notify();
    }
    Ok(())
}
