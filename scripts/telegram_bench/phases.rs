//! The measured phases: 5xx faults, mixed faults, a full outage and its drain, tap to long
//! poll, and the agent-hook figures. Each prints its own figures.

use super::*;

/// The figure of the reliability issue: delivery of N approvals under 30% injected 5xx against
/// the fault-free time of the same N, measured in the same run (target ≤ 1.5×).
pub(crate) async fn fivexx_phase(
    args: &Args,
    fake: &FakeTelegram,
    service: &Service,
) -> Result<(), BoxError> {
    let n = args.approvals;
    println!(
        "\n== 0. {n} approvals fault-free, then {n} with {:.0}% 5xx",
        args.fault_rate * 100.0
    );
    let (clean, _) = deliver_timed(fake, service, 1_000_000, n).await?;
    fake.set_random_faults(
        args.fault_rate,
        7,
        vec![Fault::Status(500), Fault::Status(502), Fault::Status(503)],
    );
    let (faulty, ids) = deliver_timed(fake, service, 2_000_000, n).await?;
    fake.clear_faults();
    let counts = copies(fake, &ids);
    let duplicates: usize = counts.values().map(|c| c.saturating_sub(1)).sum();
    let missing = counts.values().filter(|c| **c == 0).count();
    println!(
        "fault-free: {clean:.2?}; under 5xx: {faulty:.2?} = {:.2}× (target ≤ 1.5×); missing {missing}, duplicates {duplicates}",
        faulty.as_secs_f64() / clean.as_secs_f64()
    );
    Ok(())
}

pub(crate) async fn faults_phase(
    args: &Args,
    fake: &FakeTelegram,
    service: &Service,
) -> Result<(), BoxError> {
    println!(
        "\n== 1. {} approvals with {:.0}% of Bot API calls failing",
        args.approvals,
        args.fault_rate * 100.0
    );
    fake.set_random_faults(
        args.fault_rate,
        42,
        vec![
            Fault::Status(500),
            Fault::Status(502),
            Fault::Status(503),
            Fault::TooManyRequests { retry_after: 1 },
            Fault::Delay(Duration::from_millis(300)),
            Fault::DropConnection,
        ],
    );
    let started = Instant::now();
    let ids = create_many(service, 0, args.approvals).await?;
    let created_in = started.elapsed();
    let delivered_in = until(Duration::from_secs(900), || {
        copies(fake, &ids).values().all(|n| *n >= 1)
    })
    .await;
    fake.clear_faults();
    let counts = copies(fake, &ids);
    let delivered = counts.values().filter(|n| **n >= 1).count();
    let duplicates: usize = counts.values().map(|n| n.saturating_sub(1)).sum();
    let failed = fake
        .calls_to("sendMessage")
        .iter()
        .filter(|c| !c.is_ok())
        .count();
    println!("created {} approvals in {:.1?}", ids.len(), created_in);
    println!(
        "sendMessage calls: {} ({} failed by injection)",
        fake.calls_to("sendMessage").len(),
        failed
    );
    println!(
        "delivered: {delivered}/{} = {:.2}% (target 100%) in {}",
        ids.len(),
        100.0 * delivered as f64 / ids.len() as f64,
        delivered_in.map_or("— not within 15 min".into(), |d| format!(
            "{d:.1?} after the last create"
        ))
    );
    println!(
        "duplicates: {duplicates} = {:.2}% (target < 0.5%)",
        100.0 * duplicates as f64 / ids.len() as f64
    );
    Ok(())
}

pub(crate) async fn outage_phase(
    args: &Args,
    fake: &FakeTelegram,
    service: &Service,
) -> Result<(), BoxError> {
    println!(
        "\n== 2. a {} s outage with {} approvals created during it",
        args.outage_seconds, args.outage_approvals
    );
    fake.set_down(Some(Fault::DropConnection), false);
    let outage = Instant::now();
    let ids = create_many(service, 1_000_000, args.outage_approvals).await?;
    tokio::time::sleep(Duration::from_secs(args.outage_seconds).saturating_sub(outage.elapsed()))
        .await;
    let queued = service
        .metric("approval_gate_telegram_outbox_size")
        .await
        .unwrap_or(-1.0);
    fake.clear_faults();
    let back = Instant::now();
    let shown = until(Duration::from_secs(600), || {
        copies(fake, &ids).values().all(|n| *n >= 1)
    })
    .await;
    let mut drained = None;
    while back.elapsed() < Duration::from_secs(600) {
        if service.metric("approval_gate_telegram_outbox_size").await == Some(0.0) {
            drained = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("outbox at the end of the outage: {queued}");
    println!(
        "all shown on Telegram {} after it came back; outbox empty after {}",
        shown.map_or("— never".into(), |d| format!("{d:.2?}")),
        drained.map_or("— never".into(), |d| format!("{d:.2?}"))
    );
    println!("(the breaker probes every 2 s here: the drain includes waiting for the next probe)");
    Ok(())
}

pub(crate) async fn tap_phase(
    args: &Args,
    fake: &FakeTelegram,
    service: &Service,
) -> Result<(), BoxError> {
    println!(
        "\n== 3. tap → long poll return, {} taps, no injected latency",
        args.taps
    );
    let operator = FakeUser::new(OPERATOR).with_username("bench_ops");
    let mut latencies = Vec::with_capacity(args.taps);
    for i in 0..args.taps {
        let id = service.create(2_000_000 + i).await?;
        until(Duration::from_secs(30), || {
            copies(fake, std::slice::from_ref(&id))[&id] >= 1
        })
        .await;
        let message = fake
            .messages()
            .into_iter()
            .find(|m| m.text.contains(&id))
            .ok_or("message")?;
        let data = message
            .callback_data()
            .into_iter()
            .find(|d| d.starts_with("a:"))
            .ok_or("button")?;
        let poll = service.long_poll(&id);
        let tap = async {
            // Tap once the long poll is registered, so the figure is tap → return, not a race.
            while service.metric("approval_gate_waiters").await.unwrap_or(0.0) < 1.0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let at = Instant::now();
            fake.inject_callback(&operator, CHAT_ID, message.message_id, &data);
            at
        };
        let (polled, tapped_at) = tokio::join!(poll, tap);
        let polled = polled?;
        if polled["status"] != "approved" {
            return Err(format!("tap did not approve: {polled}").into());
        }
        latencies.push(tapped_at.elapsed());
    }
    latencies.sort();
    println!(
        "tap → long poll: p50 {:.1?}, p99 {:.1?}, max {:.1?} (target p99 < 50 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
}

/// The agents issue's figures: `approval-gate hook claude-code` start to exit when a policy rule
/// allows at once, and tap → HTTP hook reply (the hook is held, the operator taps).
pub(crate) async fn hooks_phase(
    args: &Args,
    fake: &FakeTelegram,
    service: &Service,
) -> Result<(), BoxError> {
    println!(
        "\n== hooks: command-hook start → exit on a policy allow, {} runs",
        args.taps
    );
    let mut runs = Vec::with_capacity(args.taps);
    for i in 0..args.taps {
        let input = json!({"session_id": "bench", "hook_event_name": "PreToolUse", "tool_name": "Read",
            "tool_input": {"file_path": "/etc/hosts"}, "tool_use_id": format!("toolu_read_{i}")});
        let started = Instant::now();
        let mut child = Command::new(&args.binary)
            .args(["hook", "claude-code", "--url", &service.base])
            .env("APPROVAL_GATE_TOKEN", AGENT_TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(input.to_string().as_bytes())?;
        }
        let output = child.wait_with_output()?;
        runs.push(started.elapsed());
        let answer: Value = serde_json::from_slice(&output.stdout)?;
        if answer["hookSpecificOutput"]["permissionDecision"] != "allow" {
            return Err(format!("the policy did not allow: {answer}").into());
        }
    }
    runs.sort();
    println!(
        "command hook start → exit: p50 {:.1?}, p99 {:.1?}, max {:.1?} (target < 50 ms)",
        percentile(&runs, 0.5),
        percentile(&runs, 0.99),
        runs.last().copied().unwrap_or_default()
    );

    println!(
        "\n== hooks: tap → Claude Code HTTP hook reply, {} taps",
        args.taps
    );
    let operator = FakeUser::new(OPERATOR).with_username("bench_ops");
    let mut latencies = Vec::with_capacity(args.taps);
    for i in 0..args.taps {
        let input = json!({"session_id": format!("hook-{i}"), "hook_event_name": "PreToolUse",
            "tool_name": "Bash", "tool_input": {"command": format!("make deploy-{i}")},
            "tool_use_id": format!("toolu_bash_{i}")});
        let held = service
            .http
            .post(format!("{}/hooks/claude-code/pre-tool-use", service.base))
            .bearer_auth(AGENT_TOKEN)
            .json(&input)
            .send();
        let tap = async {
            let command = format!("make deploy-{i}");
            let message = loop {
                if let Some(m) = fake
                    .messages()
                    .into_iter()
                    .find(|m| m.plain_text.contains(&command))
                {
                    break m;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            while service.metric("approval_gate_waiters").await.unwrap_or(0.0) < 1.0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let data = message
                .callback_data()
                .into_iter()
                .find(|d| d.starts_with("a:"));
            let at = Instant::now();
            if let Some(data) = data {
                fake.inject_callback(&operator, CHAT_ID, message.message_id, &data);
            }
            at
        };
        let (response, tapped_at) = tokio::join!(held, tap);
        let body = response?.text().await?;
        latencies.push(tapped_at.elapsed());
        let answer: Value = serde_json::from_str(body.trim())?;
        if answer["hookSpecificOutput"]["permissionDecision"] != "allow" {
            return Err(format!("the tap did not allow: {answer}").into());
        }
    }
    latencies.sort();
    println!(
        "tap → hook reply: p50 {:.1?}, p99 {:.1?}, max {:.1?} (target p99 < 50 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
}
