//! The cost of recording one metric, two ways: the Prometheus update itself (what the
//! MetricsCollector does per message), and the whole path a handler pays (`do_send` of a
//! `Metric` to the collector, measured until the collector has processed all of them).
//!
//! Run with `cargo run --release --example metrics-bench`.

use std::time::Instant;

use actix::prelude::*;
use approval_gate_actors::metrics::{Gather, Metric, MetricsCollector};

const N: u64 = 2_000_000;

fn main() {
    let counter =
        prometheus::IntCounterVec::new(prometheus::Opts::new("bench_total", "bench"), &["outcome"])
            .expect("valid metric");
    let started = Instant::now();
    for i in 0..N {
        let outcome = if i % 2 == 0 { "approved" } else { "rejected" };
        counter.with_label_values(&[outcome]).inc();
    }
    let direct = started.elapsed().as_nanos() as f64 / N as f64;
    println!("labelled counter increment: {direct:.1} ns per record ({N} records)");

    let system = System::new();
    system.block_on(async {
        let collector = MetricsCollector::new().start();
        let recipient = collector.clone().recipient::<Metric>();
        let started = Instant::now();
        for i in 0..N {
            recipient.do_send(Metric::ApprovalEnded {
                outcome: if i % 2 == 0 { "approved" } else { "rejected" },
                seconds: 1.5,
            });
            // Let the collector drain its mailbox now and then, as it does in the service.
            if i % 4096 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let _ = collector.send(Gather).await;
        let via_actor = started.elapsed().as_nanos() as f64 / N as f64;
        println!(
            "Metric message to the MetricsCollector (do_send + counter + histogram): {via_actor:.1} ns per record"
        );
    });
}
