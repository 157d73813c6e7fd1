//! The phases on a store of approvals: `--large` ended approvals written directly, `--pending`
//! approvals filled through the API (memory), the long-poll fan-out, and the restart (start-up
//! time on that store).

use super::*;

impl Bench<'_> {
    /// A store of `n` ended approvals: how long the service takes to be ready on it, and how
    /// fast it lists the pending ones (the status index makes that O(page), not O(history)).
    pub(super) async fn large(&mut self, n: usize) -> Result<()> {
        use approval_gate_actors::domain::{
            Actor, Approval, ApprovalId, Decision, NewApproval, Outcome,
        };
        use approval_gate_actors::store::{ApprovalStore, Change, SledStore, millis};
        const NAME: &str = "large";
        step(&format!(
            "writing {n} ended approvals and 100 pending ones into a store"
        ));
        let started = Instant::now();
        {
            let store = SledStore::open(&self.dir.join(format!("store-{NAME}")))?;
            let mut ids = ulid::Generator::new();
            let now = millis(chrono::Utc::now().timestamp_millis());
            for i in 0..n + 100 {
                let new = NewApproval {
                    session_id: "bench-large".into(),
                    tool_name: "Bash".into(),
                    tool_input: r#"{"command":"ls -la ./build"}"#.into(),
                    reason: Some("benchmark".into()),
                    agent: None,
                    requested_by: "bench".into(),
                    idempotency_key: None,
                    timeout: Duration::from_secs(7200),
                    max_timeout: None,
                    idempotent_while_pending: false,
                    cwd: None,
                };
                let mut approval = Approval::create(ApprovalId::next(&mut ids), new, now);
                if i < n {
                    let decision = Decision {
                        outcome: Outcome::Approve,
                        actor: Actor::Operator("bench".into()),
                        comment: None,
                    };
                    approval.apply(decision, now).map_err(|_| "cannot decide")?;
                }
                store.apply(&Change::quiet(&approval, None))?;
                if i % 20_000 == 19_999 {
                    store.commit().wait().await?;
                }
            }
            store.commit().wait().await?;
        }
        println!("  written in {:.1} s", started.elapsed().as_secs_f64());
        let service = self.spawn(NAME)?;
        let ready = service.wait_ready(Duration::from_secs(120)).await?;
        let rss = service.memory()?.rss_kib;
        let api = service.api(1);
        let mut samples = Vec::with_capacity(200);
        for _ in 0..200 {
            let sent = Instant::now();
            let response = api
                .http
                .get(format!(
                    "{}/api/approvals?status=pending&limit=50",
                    api.base
                ))
                .bearer_auth(OPERATOR_TOKEN)
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != StatusCode::OK || !body.starts_with(b"{\"approvals\":[{") {
                return Err(unexpected("list pending", status, &body));
            }
            samples.push(sent.elapsed());
        }
        let list = Percentiles::of(samples);
        println!(
            "  {n} ended + 100 pending: ready after {}, RSS {}; listing pending (50 per page): p50 {} p99 {}",
            ms(ready),
            mib(rss),
            ms(list.p50),
            ms(list.p99)
        );
        // An online backup of the same store, read to the end as a client would.
        let started = Instant::now();
        let response = api
            .http
            .get(format!("{}/api/admin/backup", api.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if status != StatusCode::OK {
            return Err(unexpected("backup", status, &body));
        }
        println!(
            "  online backup of {} approvals: {} in {}",
            n + 100,
            mib(body.len() as u64 / 1024),
            ms(started.elapsed())
        );
        Ok(())
    }

    pub(super) async fn fanout(&self, service: &Service) -> Result<FanoutReport> {
        let n = self.args.waiters;
        // One connection per long poll: HTTP/1.1 holds a connection for the whole wait.
        let api = service.api(n);
        let mut rounds = Vec::with_capacity(self.args.fanout_rounds);
        for round in 1..=self.args.fanout_rounds {
            step(&format!(
                "fan-out round {round}: {n} long polls on one approval, then the decision"
            ));
            let result = fanout_round(&api, n).await?;
            println!(
                "  all {n} returned {} after the decision (p50 {}, p90 {}, p99 {}; decision POST answered in {}); waiters registered in {}",
                ms(result.returns.max),
                ms(result.returns.p50),
                ms(result.returns.p90),
                ms(result.returns.p99),
                ms(result.decision),
                ms(result.registering),
            );
            rounds.push(result);
        }
        // Median by the figure the target is about: the time until the last poll returned.
        rounds.sort_by_key(|r| r.returns.max);
        let all_max = rounds.iter().map(|r| r.returns.max).collect();
        let median = rounds.swap_remove(rounds.len() / 2);
        Ok(FanoutReport {
            median,
            all_max,
            waiters: n,
        })
    }

    /// Create `--pending` approvals on a fresh store, then read the service's memory.
    pub(super) async fn fill(&self, service: &Service) -> Result<MemoryReport> {
        let n = self.args.pending;
        step(&format!(
            "creating {n} pending approvals (timeout 2h) at concurrency {}",
            self.args.concurrency
        ));
        let api = service.api(self.args.concurrency);
        let load = create_load(&api, self.args.concurrency, Stop::Count(n)).await;
        load.check("filling the store")?;
        println!(
            "  {} created in {:.1} s = {:.0}/s, {} failed",
            load.ok,
            load.elapsed.as_secs_f64(),
            load.ok as f64 / load.elapsed.as_secs_f64(),
            load.failed
        );
        let sample_id = load
            .last_id
            .ok_or("no approval was created while filling the store")?;
        let loaded = Instant::now();
        let with_backlog = service.memory()?;
        println!(
            "  RSS right after the creates {} (notifications still queued: {})",
            mib(with_backlog.rss_kib),
            count_lines(&self.notifications(PENDING)).map_or_else(
                || "unknown".into(),
                |n| (load.ok.saturating_sub(n)).to_string()
            ),
        );

        // The figure is about holding the approvals, so measure once the notification
        // backlog (one per create, fsynced one by one by the file channel) is written.
        step("waiting for the notification channels to catch up");
        let file = self.notifications(PENDING);
        let file_channel = self
            .args
            .fallback_order
            .split(',')
            .any(|channel| channel.trim() == "file");
        let drain_deadline = Duration::from_secs(300);
        let drained = loop {
            if !file_channel {
                break None;
            }
            if count_lines(&file).unwrap_or(0) >= load.ok {
                break Some(loaded.elapsed());
            }
            if loaded.elapsed() > drain_deadline {
                break None;
            }
            // Counting re-reads a file of tens of MB; no need to do it often.
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        match drained {
            Some(took) => println!("  all written {} after the last create", ms(took)),
            None if file_channel => {
                println!("  still not all written after {drain_deadline:?}; measuring anyway");
            }
            None => println!("  the file channel is off; nothing to wait for"),
        }
        // Let allocator and sled caches settle before reading the figure.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pending = api
            .metric("approval_gate_pending_approvals")
            .await?
            .unwrap_or(f64::NAN);
        let memory = service.memory()?;
        let store_bytes = dir_size(&self.dir.join(format!("store-{PENDING}")));
        println!(
            "  pending gauge {pending}; RSS {} (peak {}); store on disk {:.0} MiB",
            mib(memory.rss_kib),
            mib(memory.peak_kib),
            store_bytes as f64 / (1024.0 * 1024.0),
        );
        Ok(MemoryReport {
            created: load.ok,
            fill_rate: load.ok as f64 / load.elapsed.as_secs_f64(),
            pending,
            with_backlog,
            drained,
            memory,
            store_bytes,
            sample_id,
        })
    }

    /// SIGTERM the filled service, start it again on the same store and time it.
    pub(super) async fn restart(
        &mut self,
        service: Service,
        sample_id: &str,
    ) -> Result<StartupReport> {
        step("stopping the service (SIGTERM)");
        let shutdown = service.stop(Duration::from_secs(300)).await?;
        println!("  exited {} after SIGTERM", ms(shutdown));

        step(&format!(
            "restarting on the store with {} pending approvals",
            self.args.pending
        ));
        let service = self.spawn(PENDING)?;
        let spawned = service.spawned_at;
        let api = service.api(4);
        let deadline = Duration::from_secs(60);
        // Both poll from the moment of spawn: a ready probe and a real read are different
        // promises, and either could come first.
        let (ready, first_get) = tokio::join!(
            poll_until(deadline, || async {
                api.ready().await.unwrap_or(false).then_some(())
            }),
            poll_until(deadline, || async { api.get(sample_id).await.ok() }),
        );
        let ready = ready.ok_or("the restarted service never reported ready")?;
        let (first_get, status) = first_get.ok_or("the restarted service never served a GET")?;
        let ready = ready.0.duration_since(spawned);
        let first_get = first_get.duration_since(spawned);
        if status != "pending" {
            return Err(format!("approval {sample_id} came back {status:?}, not pending").into());
        }
        let memory_at_ready = service.memory()?;
        let pending = api
            .metric("approval_gate_pending_approvals")
            .await?
            .unwrap_or(f64::NAN);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let memory_settled = service.memory()?;
        println!(
            "  ready after {}, first GET after {}; pending gauge {pending}; RSS {} at ready, {} a second later (peak {})",
            ms(ready),
            ms(first_get),
            mib(memory_at_ready.rss_kib),
            mib(memory_settled.rss_kib),
            mib(memory_settled.peak_kib),
        );
        if let Err(error) = service.stop(Duration::from_secs(300)).await {
            println!("  {error}; killed it");
        }
        Ok(StartupReport {
            shutdown,
            ready,
            first_get,
            pending,
            memory: memory_settled,
        })
    }
}
