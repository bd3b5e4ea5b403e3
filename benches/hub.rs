//! The cross-core path of a publish: one message into another core's crossbeam queue, and the
//! wake of the monoio task that drains it (monoio's `sync` cross-thread wake: a flume channel and
//! an eventfd write when the consumer is parked). Unbatched wakes after every message; batched
//! wakes once per 64, as a worker does once per input batch. The consumer is a real monoio
//! runtime on its own thread, draining in batches of 256 like a worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wsgate::hub::{Hub, INBOX_CAPACITY, LocalHub};

struct Consumer {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn start_consumer(hub: Arc<Hub>) -> Consumer {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
                .unwrap();
            rt.block_on(async move {
                let local = LocalHub::new(hub, 1);
                local.interest_start("bench");
                ready_tx.send(()).unwrap();
                let mut batch = Vec::with_capacity(256);
                while !stop.load(Ordering::Acquire) {
                    std::future::poll_fn(|cx| local.poll_inbox(cx, &mut batch, 256)).await;
                    received.fetch_add(batch.len() as u64, Ordering::Release);
                    batch.clear();
                }
            });
        })
    };
    ready_rx.recv().unwrap();
    Consumer {
        received,
        stop,
        thread: Some(thread),
    }
}

/// Sends `n` messages, waking the consumer every `wake_every`, and waits until all arrived.
fn run(
    producer: &LocalHub,
    consumer: &Consumer,
    n: u64,
    wake_every: u64,
    frame: &Bytes,
) -> Duration {
    let group = producer
        .targets("bench")
        .group
        .expect("the consumer registered interest");
    let before = consumer.received.load(Ordering::Acquire);
    let start = Instant::now();
    for i in 1..=n {
        // The queue is bounded: wait for the consumer rather than lose a message.
        while producer.hub().queue_depth(1) + 1 >= INBOX_CAPACITY {
            producer.wake_pending();
            std::hint::spin_loop();
        }
        assert_eq!(producer.send_remote(&group, frame), 0);
        if i % wake_every == 0 {
            producer.wake_pending();
        }
    }
    producer.wake_pending();
    while consumer.received.load(Ordering::Acquire) < before + n {
        std::hint::spin_loop();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let hub = Hub::new(2);
    let mut consumer = start_consumer(hub.clone());
    let producer = LocalHub::new(hub.clone(), 0);
    let frame =
        Bytes::from_static(b"\x81\x2b{\"action\":\"message\",\"group\":\"bench\",\"data\":1}");
    let mut group = c.benchmark_group("cross-core queue + wake");
    group.throughput(Throughput::Elements(1));
    for (name, wake_every) in [
        ("unbatched (wake per message)", 1),
        ("batched (wake per 64)", 64),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| run(&producer, &consumer, iters, wake_every, &frame));
        });
    }
    group.finish();
    consumer.stop.store(true, Ordering::Release);
    let group = producer.targets("bench").group.unwrap();
    producer.send_remote(&group, &frame);
    producer.wake_pending();
    if let Some(t) = consumer.thread.take() {
        t.join().unwrap();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
