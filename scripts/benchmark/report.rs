//! Figures and how they are printed: percentiles, the per-phase reports and the final table
//! against the targets (the machine and the service logs are described by `machine.rs`).

use super::*;

#[derive(Clone, Copy)]
pub(super) struct Percentiles {
    pub(super) p50: Duration,
    pub(super) p90: Duration,
    pub(super) p99: Duration,
    pub(super) max: Duration,
}

impl Percentiles {
    pub(super) fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        // Nearest rank: the smallest sample with at least p of all samples at or below it.
        let at = |p: f64| {
            let rank = (p * samples.len() as f64).ceil() as usize;
            samples
                .get(rank.saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Memory {
    pub(super) rss_kib: u64,
    pub(super) peak_kib: u64,
}

pub(super) struct CreatesReport {
    pub(super) per_second: f64,
    pub(super) latency: Percentiles,
    pub(super) ok: usize,
    pub(super) failed: usize,
    pub(super) elapsed: Duration,
    pub(super) service_cpu: Duration,
    pub(super) client_cpu: Duration,
    /// Used by everything else on the machine during the run: kernel threads (journal, I/O),
    /// other processes.
    pub(super) other_cpu: Duration,
    /// Including the warm-up.
    pub(super) created_total: usize,
    /// Lines in the file channel's file when the measured run ended.
    pub(super) notified: Option<usize>,
    /// SIGTERM → exit of the throughput service, if it exited in time.
    pub(super) shutdown: Option<Duration>,
    /// The baseline server measured in the same run, if one was given.
    pub(super) baseline: Option<Baseline>,
}

pub(super) struct Baseline {
    pub(super) per_second: f64,
    pub(super) cpu_us_per_create: f64,
    pub(super) p99: Duration,
    /// Creates/s of each run this figure is the mean of.
    pub(super) runs: Vec<f64>,
}

impl Baseline {
    /// The mean of a run before the service and one after it (the worse p99).
    pub(super) fn mean(before: Baseline, after: Baseline) -> Baseline {
        Baseline {
            per_second: (before.per_second + after.per_second) / 2.0,
            cpu_us_per_create: (before.cpu_us_per_create + after.cpu_us_per_create) / 2.0,
            p99: before.p99.max(after.p99),
            runs: before.runs.into_iter().chain(after.runs).collect(),
        }
    }
}

pub(super) struct FanoutReport {
    pub(super) median: FanoutRound,
    pub(super) all_max: Vec<Duration>,
    pub(super) waiters: usize,
}

pub(super) struct MemoryReport {
    pub(super) created: usize,
    pub(super) fill_rate: f64,
    pub(super) pending: f64,
    /// Right after the last create, notifications still queued.
    pub(super) with_backlog: Memory,
    /// Last create → every notification written to the file channel.
    pub(super) drained: Option<Duration>,
    pub(super) memory: Memory,
    pub(super) store_bytes: u64,
    pub(super) sample_id: String,
}

pub(super) struct StartupReport {
    pub(super) shutdown: Duration,
    pub(super) ready: Duration,
    pub(super) first_get: Duration,
    pub(super) pending: f64,
    pub(super) memory: Memory,
}

pub(super) struct Report {
    pub(super) creates: CreatesReport,
    pub(super) fanout: FanoutReport,
    pub(super) memory: MemoryReport,
    pub(super) startup: StartupReport,
}

impl Report {
    pub(super) fn print(&self, args: &Args, machine: &Machine) {
        let Self {
            creates,
            fanout,
            memory,
            startup,
        } = self;
        let c = args.concurrency;
        let n = args.pending;
        let telegram = match (args.telegram.as_str(), args.unpaced) {
            ("up", true) => "up, unpaced",
            ("up", false) => "up, paced by its defaults",
            (mode, _) => mode,
        };
        let mut rows: Vec<(String, String, String, Option<bool>)> = vec![
            (
                format!("durable creates/s (concurrency {c}, Telegram {telegram})"),
                format!("{:.0}/s", creates.per_second),
                "≥ 5000/s".into(),
                Some(creates.per_second >= 5000.0),
            ),
            (
                "  create latency p50".into(),
                ms(creates.latency.p50),
                String::new(),
                None,
            ),
            (
                "  create latency p99".into(),
                ms(creates.latency.p99),
                "< 10 ms".into(),
                Some(creates.latency.p99 < Duration::from_millis(10)),
            ),
            (
                format!("decision → all {} long polls returned", fanout.waiters),
                ms(fanout.median.returns.max),
                "< 50 ms".into(),
                Some(fanout.median.returns.max < Duration::from_millis(50)),
            ),
            (
                "  per-poll return p50".into(),
                ms(fanout.median.returns.p50),
                String::new(),
                None,
            ),
            (
                format!("RSS with {n} pending"),
                mib(memory.memory.rss_kib),
                "< 300 MB".into(),
                Some(memory.memory.rss_kib * 1024 < RSS_TARGET_BYTES),
            ),
            (
                "  RSS before their notifications were written".into(),
                mib(memory.with_backlog.rss_kib),
                "< 300 MB".into(),
                Some(memory.with_backlog.rss_kib * 1024 < RSS_TARGET_BYTES),
            ),
            (
                format!("start-up to /health/ready ({n} pending)"),
                ms(startup.ready),
                "< 3 s".into(),
                Some(startup.ready < Duration::from_secs(3)),
            ),
            (
                "start-up to first GET of a stored approval".into(),
                ms(startup.first_get),
                "< 3 s".into(),
                Some(startup.first_get < Duration::from_secs(3)),
            ),
            (
                "  RSS after restart".into(),
                mib(startup.memory.rss_kib),
                String::new(),
                None,
            ),
        ];
        // Against the baseline measured in the same run (rows 3.. follow the create latency).
        if let Some(b) = &creates.baseline {
            let ratio = creates.per_second / b.per_second;
            let service_us = creates.service_cpu.as_secs_f64() * 1e6 / creates.ok.max(1) as f64;
            let baseline_rows = [
                (
                    "baseline: bare sled + fdatasync creates/s".to_string(),
                    format!("{:.0}/s", b.per_second),
                    String::new(),
                    None,
                ),
                (
                    "  baseline before / after the service".into(),
                    b.runs
                        .iter()
                        .map(|r| format!("{r:.0}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    String::new(),
                    None,
                ),
                (
                    "  service ÷ baseline".into(),
                    format!("{ratio:.2}×"),
                    "≥ 0.7×".into(),
                    Some(ratio >= 0.7),
                ),
                (
                    "  CPU µs per create: service / baseline".into(),
                    format!("{service_us:.0} / {:.0}", b.cpu_us_per_create),
                    String::new(),
                    None,
                ),
                (
                    "  baseline create p99".into(),
                    ms(b.p99),
                    String::new(),
                    None,
                ),
            ];
            rows.splice(3..3, baseline_rows);
        }

        println!();
        println!("details");
        println!(
            "  creates: {} in {:.2} s, {} failed, max latency {}; CPU: service {:.1} s, bench client {:.1} s, \
             everything else {:.1} s",
            creates.ok,
            creates.elapsed.as_secs_f64(),
            creates.failed,
            ms(creates.latency.max),
            creates.service_cpu.as_secs_f64(),
            creates.client_cpu.as_secs_f64(),
            creates.other_cpu.as_secs_f64(),
        );
        // With Telegram up the fallback channels are not used: no file to count.
        let notified = creates.notified.map_or_else(String::new, |n| {
            format!(
                "file channel had written {n} of {} notifications when the run ended; ",
                creates.created_total
            )
        });
        println!(
            "  creates: {notified}SIGTERM → exit took {}",
            creates
                .shutdown
                .map_or_else(|| "too long (killed)".into(), ms),
        );
        let rounds: Vec<String> = fanout.all_max.iter().map(|d| ms(*d)).collect();
        println!(
            "  fan-out: last poll returned after [{}] in the {} rounds (median shown); decision POST {} in the median round",
            rounds.join(", "),
            rounds.len(),
            ms(fanout.median.decision),
        );
        println!(
            "  pending store: {} created at {:.0}/s, notifications all written {} after the last create; \
             pending gauge {} before and {} after the restart; {:.0} MiB on disk",
            memory.created,
            memory.fill_rate,
            memory
                .drained
                .map_or_else(|| "(never / file channel off)".into(), ms),
            memory.pending,
            startup.pending,
            memory.store_bytes as f64 / (1024.0 * 1024.0),
        );
        println!(
            "  RSS peak: {} while filling, {} after the restart; SIGTERM → exit {}",
            mib(memory.memory.peak_kib),
            mib(startup.memory.peak_kib),
            ms(startup.shutdown),
        );

        println!();
        println!(
            "{:<46} {:>12}  {:<10} result",
            "figure", "measured", "target"
        );
        println!("{}", "-".repeat(80));
        for (figure, measured, target, met) in rows {
            let result = match met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            println!("{figure:<46} {measured:>12}  {target:<10} {result}");
        }
        println!("{}", "-".repeat(80));
        println!(
            "machine: {} CPUs ({}), {} RAM, kernel {}; load average before {}, after {}",
            machine.cpus,
            machine.cpu_model,
            mib(machine.mem_total_kib),
            machine.kernel,
            machine.load_before,
            read_trimmed("/proc/loadavg"),
        );
        println!(
            "The bench client (tokio, 2 worker threads) runs on the same CPUs as the service, \
             so every figure includes its cost. Memory is shown in MiB; the 300 MB target is \
             checked as 300,000,000 bytes (286.1 MiB)."
        );
    }
}

pub(super) fn ms(d: Duration) -> String {
    let millis = d.as_secs_f64() * 1000.0;
    if millis < 10.0 {
        format!("{millis:.2} ms")
    } else {
        format!("{millis:.1} ms")
    }
}

pub(super) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
