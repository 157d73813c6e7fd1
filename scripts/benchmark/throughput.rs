//! The throughput phases: the in-run baseline (bare sled insert + flush + fdatasync behind the
//! same actix-web setup) and durable creates against the service, with CPU per create for both
//! and by thread for the service.

use super::*;

impl Bench<'_> {
    /// The same create load against the baseline server: the honest durable limit. `when`
    /// (before or after the service) names its store and its report line.
    pub(super) async fn baseline(&self, path: &Path, when: &str) -> Result<Baseline> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let store = self.dir.join(format!("store-baseline-{when}"));
        let child = Command::new(path)
            .args([port.to_string(), store.display().to_string()])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", path.display()))?;
        let service = Service {
            child,
            base: format!("http://127.0.0.1:{port}"),
            spawned_at: Instant::now(),
        };
        let accepting = poll_until(Duration::from_secs(30), || async {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await;
        if accepting.is_none() {
            return Err("the baseline server did not start listening".into());
        }
        let args = self.args;
        let api = service.api(args.concurrency);
        step(&format!(
            "baseline {when} the service (bare sled insert + flush + fdatasync): {:.0} s warm-up, \
             {:.0} s measured",
            args.warmup_seconds, args.creates_seconds
        ));
        create_load(
            &api,
            args.concurrency,
            Stop::After(Duration::from_secs_f64(args.warmup_seconds)),
        )
        .await
        .check("baseline warm-up")?;
        let cpu = service.cpu_time()?;
        let load = create_load(
            &api,
            args.concurrency,
            Stop::After(Duration::from_secs_f64(args.creates_seconds)),
        )
        .await;
        let cpu = service.cpu_time()?.saturating_sub(cpu);
        load.check("baseline creates")?;
        let per_second = load.ok as f64 / load.elapsed.as_secs_f64();
        let baseline = Baseline {
            per_second,
            cpu_us_per_create: cpu.as_secs_f64() * 1e6 / load.ok.max(1) as f64,
            p99: Percentiles::of(load.latencies).p99,
            runs: vec![per_second],
        };
        println!(
            "  {:.0}/s, p99 {}, {:.0} CPU µs per create",
            baseline.per_second,
            ms(baseline.p99),
            baseline.cpu_us_per_create
        );
        Ok(baseline)
    }

    /// Telegram down: measure the outage, not its first seconds. The breaker opens after
    /// `failure_threshold` failed calls, paced by `send_interval` (about 4 s with the defaults);
    /// meanwhile the warm-up's approvals wait for their retries, then go to the fallback
    /// channels at once. Wait for the breaker to be open and the file channel to have written
    /// every approval created so far.
    async fn until_outage_settled(&self, api: &Api, created: usize) -> Result<()> {
        step("waiting for the circuit breaker to open and the fallback channels to catch up");
        let started = Instant::now();
        let settled = poll_until(Duration::from_secs(120), || async {
            let values = api
                .metrics(&[
                    "approval_gate_telegram_circuit_state",
                    "approval_gate_fallback_queued",
                ])
                .await
                .ok()?;
            let written = count_lines(&self.notifications(THROUGHPUT)).unwrap_or(0);
            (values[0] == Some(1.0) && values[1] == Some(0.0) && written >= created).then_some(())
        })
        .await;
        match settled {
            Some(_) => {
                println!("  settled after {}", ms(started.elapsed()));
                Ok(())
            }
            None => Err("the circuit breaker did not open within 120 s".into()),
        }
    }

    pub(super) async fn creates(&self, service: &Service) -> Result<CreatesReport> {
        let args = self.args;
        let api = service.api(args.concurrency);
        step(&format!(
            "warm-up: {:.0} s of creates at concurrency {}",
            args.warmup_seconds, args.concurrency
        ));
        let warmup = create_load(
            &api,
            args.concurrency,
            Stop::After(Duration::from_secs_f64(args.warmup_seconds)),
        )
        .await;
        warmup.check("warm-up")?;
        if args.telegram == "down" {
            self.until_outage_settled(&api, warmup.ok).await?;
        }

        step(&format!(
            "measuring durable creates: {:.0} s at concurrency {}",
            args.creates_seconds, args.concurrency
        ));
        let commits_before = api.commit_totals().await?;
        let service_cpu = service.cpu_time()?;
        let threads_before = thread_cpu(service.pid());
        let client_cpu = cpu_time("self")?;
        let machine_cpu = machine_busy()?;
        let load = create_load(
            &api,
            args.concurrency,
            Stop::After(Duration::from_secs_f64(args.creates_seconds)),
        )
        .await;
        let service_cpu = service.cpu_time()?.saturating_sub(service_cpu);
        let threads = thread_cpu_since(service.pid(), &threads_before);
        let client_cpu = cpu_time("self")?.saturating_sub(client_cpu);
        // Whatever else ran meanwhile (a build, a test run) skews the figures: show it.
        let other_cpu = machine_busy()?
            .saturating_sub(machine_cpu)
            .saturating_sub(service_cpu + client_cpu);
        load.check("creates")?;
        let commits_after = api.commit_totals().await?;
        // The 201 waits for the store only; notifications are sent behind it. How far they lag
        // shows whether the channels keep up with this rate.
        let notified = count_lines(&self.notifications(THROUGHPUT));
        let report = CreatesReport {
            per_second: load.ok as f64 / load.elapsed.as_secs_f64(),
            latency: Percentiles::of(load.latencies),
            ok: load.ok,
            failed: load.failed,
            elapsed: load.elapsed,
            service_cpu,
            client_cpu,
            other_cpu,
            created_total: warmup.ok + load.ok,
            notified,
            shutdown: None,
            baseline: None,
        };
        println!(
            "  {} created in {:.2} s = {:.0}/s, {} failed; latency p50 {} p99 {} max {}",
            report.ok,
            report.elapsed.as_secs_f64(),
            report.per_second,
            report.failed,
            ms(report.latency.p50),
            ms(report.latency.p99),
            ms(report.latency.max),
        );
        println!(
            "  CPU during the run: service {:.2} s ({:.0}% of one core), bench client {:.2} s ({:.0}%), \
             everything else (kernel threads, other processes) {:.2} s ({:.0}%)",
            service_cpu.as_secs_f64(),
            100.0 * service_cpu.as_secs_f64() / report.elapsed.as_secs_f64(),
            client_cpu.as_secs_f64(),
            100.0 * client_cpu.as_secs_f64() / report.elapsed.as_secs_f64(),
            other_cpu.as_secs_f64(),
            100.0 * other_cpu.as_secs_f64() / report.elapsed.as_secs_f64(),
        );
        println!(
            "  service CPU per create by thread: {}",
            by_thread(&threads, report.ok)
        );
        println!("  {}", commit_line(&commits_before, &commits_after));
        if let Some(fake) = self
            .telegram
            .as_ref()
            .filter(|_| self.args.telegram == "up")
        {
            println!(
                "  the fake Bot API had {} messages of {} approvals when the run ended",
                fake.messages().len(),
                report.created_total
            );
        }
        if let Some(notified) = notified {
            println!(
                "  file channel had written {notified} of {} notifications when the run ended",
                report.created_total
            );
        }
        Ok(report)
    }
}

/// The group commit during the run, from its counters: the serial step every create waits for.
fn commit_line(before: &[f64; 5], after: &[f64; 5]) -> String {
    let [commits, requests, apply, flush, sync] =
        std::array::from_fn(|i| (after[i] - before[i]).max(0.0));
    let per_commit_us = |seconds: f64| seconds * 1e6 / commits.max(1.0);
    let busy = apply + flush + sync;
    format!(
        "group commit: {commits:.0} commits, {:.1} requests each; per commit apply {:.0} µs, \
         flush {:.0} µs, fdatasync {:.0} µs ({busy:.2} s of the run in commits)",
        requests / commits.max(1.0),
        per_commit_us(apply),
        per_commit_us(flush),
        per_commit_us(sync),
    )
}
