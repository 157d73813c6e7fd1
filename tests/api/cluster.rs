//! Several instances on one PostgreSQL database, as child processes (docs/deployment.md): any
//! instance takes any request, the first decision wins across instances, waiters wake wherever
//! they wait, each approval times out once, and a lost LISTEN connection loses no wake-up.
//!
//! These run on every backend setting of the suite (they are PostgreSQL's own tests); with
//! `APPROVAL_GATE_TEST_POSTGRES=skip` they say NOT RUN.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// `n` instances sharing `db`, each on a folder of its own under `dir`.
fn cluster(
    dir: &std::path::Path,
    db: &PgDatabase,
    n: usize,
    extra: &[(&str, &str)],
) -> Vec<ChildApp> {
    pg_instances(dir, db, n, &[], extra)
}

/// An in-process instance on `db` through a proxy the test can cut or slow down.
async fn behind_a_proxy(db: &PgDatabase, extra: &[(&str, &str)]) -> (TcpProxy, TestApp) {
    let proxy = TcpProxy::start(db.server_addr());
    let url = db.url_via(proxy.port);
    let mut overrides = vec![
        ("APPROVAL_GATE__STORE__BACKEND", "postgres"),
        ("APPROVAL_GATE__STORE__POSTGRES__URL", url.as_str()),
    ];
    overrides.extend_from_slice(extra);
    let app = spawn_app_with(&overrides).await;
    (proxy, app)
}

/// Wait until `app` holds exactly one long poll (registered, so a decision will wake it).
async fn holds_one_long_poll(app: &ChildApp) {
    eventually(
        Duration::from_secs(10),
        "the long poll registered",
        || async {
            (app.health().await["actors"]["approval_registry"]["detail"]["waiters"] == 1)
                .then_some(())
        },
    )
    .await;
}

/// A 30 s long poll on `app`, running on its own.
fn long_poll(
    app: &ChildApp,
    id: &str,
) -> actix_rt::task::JoinHandle<Result<reqwest::Response, reqwest::Error>> {
    let request = app
        .request(
            reqwest::Method::GET,
            &format!("/api/approvals/{id}?wait=30s"),
            Some(AGENT_TOKEN),
        )
        .send();
    actix_rt::spawn(request)
}

async fn status_of(app: &impl Api, id: &str) -> String {
    let body: Value = app.get(id, None).await.json().await.expect("json");
    body["status"].as_str().unwrap_or_default().to_string()
}

async fn history(app: &impl Api, id: &str) -> Vec<Value> {
    let body = app
        .operator_json(&format!("/api/approvals/{id}/events"))
        .await;
    body["events"].as_array().cloned().unwrap_or_default()
}

#[actix_rt::test]
async fn created_on_one_instance_waited_on_another_decided_on_a_third() {
    let Some(db) = PgDatabase::create("cluster_create_wait_decide").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let apps = cluster(dir.path(), &db, 3, &[]);
    let id = apps[0].create_id(&new_approval()).await;
    let waiter = long_poll(&apps[1], &id);
    // The long poll is registered on B before C decides.
    holds_one_long_poll(&apps[1]).await;
    let decided = apps[2].decide(&id, "approve").await;
    assert_eq!(decided.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let woke = actix_rt::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("B's long poll returned after C decided")
        .expect("waiter task")
        .expect("long poll answered");
    let body: Value = woke.json().await.expect("json");
    assert_eq!(body["status"], "approved", "B's long poll saw C's decision");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by NOTIFY, not by the long poll's end"
    );
    // Every instance reads the same approval and history.
    for app in &apps {
        assert_eq!(status_of(app, &id).await, "approved");
    }
    let kinds: Vec<String> = history(&apps[0], &id)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(kinds.contains(&"created".to_string()) && kinds.contains(&"approved".to_string()));
    // Metrics: every instance reaches the database, exactly one leads, B heard C's NOTIFY.
    let mut leaders = 0.0;
    for app in &apps {
        let text = app.metrics().await;
        assert_eq!(metric(&text, "approval_gate_postgres_reachable"), Some(1.0));
        leaders += metric(&text, "approval_gate_telegram_leader").unwrap_or(0.0);
        assert!(metric(&text, "approval_gate_postgres_statements_total").is_some_and(|n| n > 0.0));
    }
    assert_eq!(leaders, 1.0, "exactly one instance leads");
    let lag = metric(
        &apps[1].metrics().await,
        "approval_gate_postgres_notify_lag_seconds",
    );
    assert!(lag.is_some_and(|lag| (0.0..5.0).contains(&lag)), "{lag:?}");
}

#[actix_rt::test]
async fn racing_decisions_on_three_instances_have_exactly_one_winner() {
    let Some(db) = PgDatabase::create("cluster_race").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let apps = cluster(dir.path(), &db, 3, &[]);
    for round in 0..25 {
        let id = apps[round % 3].create_id(&new_approval()).await;
        let (a, b, c) = futures_util::join!(
            apps[0].decide(&id, "approve"),
            apps[1].decide(&id, "reject"),
            apps[2].cancel(&id),
        );
        let statuses = [a.status(), b.status(), c.status()];
        let winners = statuses.iter().filter(|s| s.is_success()).count();
        assert_eq!(
            winners, 1,
            "round {round}: exactly one winner, got {statuses:?}"
        );
        let final_status = status_of(&apps[0], &id).await;
        for response in [a, b, c] {
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            if status.is_success() {
                assert_eq!(
                    body["status"],
                    final_status.as_str(),
                    "the winner is what is stored"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::CONFLICT,
                    "round {round}: losers get 409: {body}"
                );
                assert_eq!(
                    body["approval"]["status"],
                    final_status.as_str(),
                    "round {round}: a loser is told the winner"
                );
            }
        }
        let ended = history(&apps[1], &id)
            .await
            .iter()
            .filter(|e| {
                matches!(
                    e["kind"].as_str(),
                    Some("approved" | "rejected" | "cancelled" | "timed_out")
                )
            })
            .count();
        assert_eq!(ended, 1, "round {round}: one ending in the history");
    }
}

#[actix_rt::test]
async fn three_sweepers_time_each_approval_out_once() {
    let Some(db) = PgDatabase::create("cluster_timeouts").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let apps = cluster(
        dir.path(),
        &db,
        3,
        &[("APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL", "100ms")],
    );
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut body = new_approval();
        body["timeout"] = json!("1s");
        ids.push(apps[i % 3].create_id(&body).await);
    }
    for id in &ids {
        eventually(
            Duration::from_secs(15),
            "the approval timed out",
            || async { (status_of(&apps[2], id).await == "timed_out").then_some(()) },
        )
        .await;
    }
    // Give any late sweeper time to try again: a second timeout would show in the history.
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    for id in &ids {
        let timeouts = history(&apps[0], id)
            .await
            .iter()
            .filter(|e| e["kind"] == "timed_out")
            .count();
        assert_eq!(timeouts, 1, "{id} timed out exactly once");
    }
}

/// libfaketime, which shifts a child's clock: the path scripts/test installed it at, or
/// Debian's. `None` (the test says NOT RUN) where it is not installed.
fn faketime() -> Option<String> {
    if let Ok(path) = std::env::var("APPROVAL_GATE_TEST_FAKETIME") {
        assert!(
            std::path::Path::new(&path).exists(),
            "APPROVAL_GATE_TEST_FAKETIME names {path}, which does not exist"
        );
        return Some(path);
    }
    let debian = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if std::path::Path::new(debian).exists() {
        return Some(debian.into());
    }
    eprintln!("NOT RUN: an instance whose clock is off (libfaketime is not installed)");
    None
}

/// An instance whose host clock runs 90 s ahead decides by the database's clock, as the others
/// do: it stamps approvals with the database's time, and its sweeps do not time out approvals
/// created elsewhere before their deadline (they did: the skewed instance's orphan sweep found
/// a 3 s approval due at once), and a hook it holds waits for the decision (reckoned by the host's
/// clock, a 60 s hold 90 s "late" gave up at once). /health and the metrics show the offset.
#[actix_rt::test]
async fn an_instance_whose_clock_is_ahead_decides_by_the_databases_clock() {
    let Some(db) = PgDatabase::create("cluster_clock").await else {
        return;
    };
    let Some(faketime) = faketime() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    // Telegram and the fallback channels both hear of every change, so that both kinds of
    // notifier write history entries.
    let fake = crate::support::fake_telegram::FakeTelegram::start();
    let telegram = telegram_env(&fake.url(), fake.token());
    let mut fast: Vec<(&str, &str)> = telegram
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    fast.extend([
        ("APPROVAL_GATE__FALLBACK__ALWAYS", "true"),
        ("APPROVAL_GATE__APPROVAL_TIMEOUT__CHECK_INTERVAL", "100ms"),
        // A hook's approval lasts this long, shorter than the skew: a hold reckoned by the
        // host's clock would give up at once (the last part below).
        ("APPROVAL_GATE__AGENTS__HOOK_WAIT", "60s"),
    ]);
    // The skewed instance starts first, so that it leads the notifiers: the history entries
    // they write ("delivered", for approvals created on either instance) are its.
    let mut skewed_env = fast.clone();
    skewed_env.extend([
        ("APPROVAL_GATE__STORE__POSTGRES__INSTANCE", "skewed"),
        ("LD_PRELOAD", faketime.as_str()),
        ("FAKETIME", "+90s"),
    ]);
    let skewed = pg_instances(&dir.path().join("skewed"), &db, 1, &[], &skewed_env).remove(0);
    let honest = pg_instances(&dir.path().join("honest"), &db, 1, &[], &fast).remove(0);
    eventually(Duration::from_secs(10), "the skewed instance leads", || async {
        let health = skewed.health().await;
        (health["actors"]["approval_registry"]["detail"]["database"]["telegram_poller"]["leader"]
            == true)
            .then_some(())
    })
    .await;

    let offset_ms = |health: Value| {
        health["actors"]["approval_registry"]["detail"]["database"]["clock_offset_ms"].as_i64()
    };
    let skew = offset_ms(skewed.health().await).expect("the skewed instance's offset");
    assert!(
        (-92_000..=-88_000).contains(&skew),
        "the skewed instance measured {skew} ms"
    );
    let honest_offset = offset_ms(honest.health().await).expect("the honest instance's offset");
    assert!(
        honest_offset.abs() < 1_000,
        "honest offset {honest_offset} ms"
    );
    let gauge = eventually(Duration::from_secs(10), "the offset in metrics", || async {
        metric(
            &skewed.metrics().await,
            "approval_gate_postgres_clock_offset_seconds",
        )
        .filter(|&seconds| seconds < -1.0)
    })
    .await;
    assert!((-92.0..=-88.0).contains(&gauge), "gauge {gauge} s");

    let mut body = new_approval();
    body["timeout"] = json!("3s");
    let created = honest.create(&body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let here: Value = created.json().await.expect("json");
    let there: Value = skewed.create(&body).await.json().await.expect("json");
    let at = |v: &Value, key: &str| {
        chrono::DateTime::parse_from_rfc3339(v[key].as_str().expect(key))
            .expect("rfc3339")
            .timestamp_millis()
    };
    let stamped_apart = at(&there, "created_at") - at(&here, "created_at");
    assert!(
        (0..2_000).contains(&stamped_apart),
        "the skewed instance stamped its approval {stamped_apart} ms after the honest one's"
    );
    // The skewed instance's orphan sweep runs every second: for the next 1.5 s the honest
    // instance's approval must stay pending (its deadline is 3 s away).
    let id = here["id"].as_str().expect("id").to_string();
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_millis(1500) {
        assert_eq!(status_of(&skewed, &id).await, "pending", "timed out early");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    for (app, approval) in [(&skewed, &here), (&honest, &there)] {
        let id = approval["id"].as_str().expect("id");
        let ended: Value = eventually(Duration::from_secs(15), "timed out", || async {
            let body: Value = app.get(id, None).await.json().await.ok()?;
            (body["status"] == "timed_out").then_some(body)
        })
        .await;
        let waited = at(&ended, "decided_at") - at(&ended, "created_at");
        assert!(
            (2_900..10_000).contains(&waited),
            "{id} timed out {waited} ms after it was created"
        );
        // Both instances were running: a timeout, not an approval that expired while the
        // service was down (the skewed instance's start is 90 s later by its own clock).
        assert_eq!(ended["comment"], "no decision within 3s", "{id}");
    }
    // Every history entry is on the database's clock, whichever instance wrote it: the
    // endings, and the notifiers' "delivered" entries (Telegram's gateway and the fallback
    // channels'), all written by the skewed leader.
    for approval in [&here, &there] {
        let id = approval["id"].as_str().expect("id");
        let entries = eventually(Duration::from_secs(15), "delivered entries", || async {
            let entries = history(&honest, id).await;
            let delivered_on = |channel: &str| {
                entries
                    .iter()
                    .any(|e| e["kind"] == "delivered" && e["channel"] == channel)
            };
            (delivered_on("telegram") && delivered_on("file")).then_some(entries)
        })
        .await;
        for entry in &entries {
            let after = at(entry, "at") - at(approval, "created_at");
            assert!(
                (-1_000..15_000).contains(&after),
                "{id}: stamped {after} ms after the approval's creation: {entry}"
            );
        }
    }

    // A hook held on the skewed instance waits for the decision (its 60 s deadline is on the
    // database's clock, as its hold's reckoning must be), and one on the other instance ends it.
    let fixture = crate::agents::fixture("claude-pre-tool-use-bash");
    // The hook's answer is streamed (spaces while it holds): done once the body is.
    let request = skewed
        .request(
            reqwest::Method::POST,
            "/hooks/claude-code/pre-tool-use",
            Some(AGENT_TOKEN),
        )
        .json(&fixture)
        .send();
    let held = actix_rt::spawn(async move { request.await?.text().await });
    let id = eventually(Duration::from_secs(10), "the hook's approval", || async {
        let pending = honest.operator_json("/api/approvals?status=pending").await;
        pending["approvals"][0]["id"].as_str().map(str::to_string)
    })
    .await;
    holds_one_long_poll(&skewed).await;
    // Its age, as the skewed instance reports it, is reckoned by the same clock.
    let age = metric(
        &skewed.metrics().await,
        "approval_gate_oldest_pending_seconds",
    )
    .expect("the oldest pending approval's age");
    assert!(
        (0.0..30.0).contains(&age),
        "the skewed instance reports an age of {age} s"
    );
    // And the console's countdowns: the page counts down to deadlines by the server's time.
    let (_, snapshot) = crate::console::events(&skewed).await.next().await;
    let apart = at(&snapshot, "server_time") - chrono::Utc::now().timestamp_millis();
    assert!(
        apart.abs() < 5_000,
        "the console's server time is {apart} ms off"
    );
    actix_rt::time::sleep(Duration::from_millis(1000)).await;
    if held.is_finished() {
        let answer = held.await.expect("hook task").expect("hook answered");
        panic!("the hook gave up before its deadline: {answer}");
    }
    assert_eq!(honest.decide(&id, "approve").await.status(), StatusCode::OK);
    let answer: Value = serde_json::from_str(
        held.await
            .expect("hook task")
            .expect("hook answered")
            .trim(),
    )
    .expect("hook json");
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "allow",
        "{answer}"
    );
}

#[actix_rt::test]
async fn a_killed_listen_connection_loses_no_wake_up() {
    let Some(db) = PgDatabase::create("cluster_listen_killed").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let apps = cluster(dir.path(), &db, 2, &[]);
    let id = apps[0].create_id(&new_approval()).await;
    let waiter = long_poll(&apps[1], &id);
    holds_one_long_poll(&apps[1]).await;
    // Kill every LISTEN session, then decide before they can have reconnected: the NOTIFY is
    // sent to nobody, and B must learn of the decision from its resync.
    let admin = db.client().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'approval-gate-listen' AND datname = current_database()",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(killed >= 1, "the LISTEN sessions were found and killed");
    assert_eq!(apps[0].decide(&id, "reject").await.status(), StatusCode::OK);
    let woke = actix_rt::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("B's waiter woke after its LISTEN connection was killed")
        .expect("waiter task")
        .expect("long poll answered");
    let body: Value = woke.json().await.expect("json");
    assert_eq!(body["status"], "rejected");
}

#[actix_rt::test]
async fn idempotency_keys_hold_across_instances() {
    let Some(db) = PgDatabase::create("cluster_idempotency").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let apps = cluster(dir.path(), &db, 3, &[]);
    let mut body = new_approval();
    body["idempotency_key"] = json!("deploy-42");
    let (a, b, c) = futures_util::join!(
        apps[0].create(&body),
        apps[1].create(&body),
        apps[2].create(&body)
    );
    let mut ids = Vec::new();
    let mut created = 0;
    for response in [a, b, c] {
        if response.status() == StatusCode::CREATED {
            created += 1;
        } else {
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "a repeat answers the original"
            );
        }
        let body: Value = response.json().await.expect("json");
        ids.push(body["id"].as_str().expect("id").to_string());
    }
    assert_eq!(created, 1, "one instance created it");
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "every instance answered the same approval: {ids:?}"
    );
}

/// The database goes away under a running instance and comes back: creates answer 503 with
/// Retry-After, a hook denies, readiness fails; then the instance recovers by itself (no
/// restart) and everything acknowledged before the outage is still there and decidable.
#[actix_rt::test]
async fn a_database_outage_is_503_loses_nothing_and_heals_without_a_restart() {
    let Some(db) = PgDatabase::create("cluster_database_outage").await else {
        return;
    };
    let (proxy, app) = behind_a_proxy(
        &db,
        &[
            ("APPROVAL_GATE__STORE__POSTGRES__POOL_WAIT", "1s"),
            ("APPROVAL_GATE__AGENTS__HOOK_WAIT", "3s"),
        ],
    )
    .await;
    let before = app.create_id(&new_approval()).await;
    // Agents keep creating through the outage: every create answered 201 must survive it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, client, base) = (stop.clone(), app.client.clone(), app.address.clone());
        actix_rt::spawn(async move {
            let (mut acknowledged, mut refused) = (Vec::new(), 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = client
                    .post(format!("{base}/api/approvals"))
                    .bearer_auth(AGENT_TOKEN)
                    .json(&new_approval())
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        let body: Value = r.json().await.unwrap_or_default();
                        acknowledged.extend(body["id"].as_str().map(str::to_string));
                    }
                    Ok(r) => {
                        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "503 or 201");
                        refused += 1;
                    }
                    Err(error) => panic!("a create went unanswered: {error}"),
                }
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            (acknowledged, refused)
        })
    };
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    proxy.cut();
    let refused = eventually(Duration::from_secs(15), "a create answers 503", || async {
        let response = app.create(&new_approval()).await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    assert!(
        refused.headers().get("retry-after").is_some(),
        "a 503 says when to retry"
    );
    let fixture = crate::agents::fixture("claude-pre-tool-use-bash");
    let answer: Value = app
        .request(
            reqwest::Method::POST,
            "/hooks/claude-code/pre-tool-use",
            Some(AGENT_TOKEN),
        )
        .json(&fixture)
        .send()
        .await
        .expect("hook answered")
        .json()
        .await
        .expect("hook json");
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "deny",
        "a hook denies while the database is away: {answer}"
    );
    eventually(Duration::from_secs(15), "readiness fails", || async {
        let ready = app
            .request(reqwest::Method::GET, "/health/ready", None)
            .send()
            .await
            .expect("ready answered");
        (ready.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;

    proxy.restore();
    eventually(Duration::from_secs(20), "creates succeed again", || async {
        (app.create(&new_approval()).await.status() == StatusCode::CREATED).then_some(())
    })
    .await;
    eventually(Duration::from_secs(15), "ready again", || async {
        let ready = app
            .request(reqwest::Method::GET, "/health/ready", None)
            .send()
            .await
            .expect("ready answered");
        ready.status().is_success().then_some(())
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // How many of its creates fell into the outage depends on timing; each was a 503, never
    // an unanswered request or a 500.
    let (acknowledged, _refused) = load.await.expect("load task");
    assert!(
        acknowledged.len() > 10,
        "the load saw creates succeed: {}",
        acknowledged.len()
    );
    let db_client = db.client().await;
    for id in &acknowledged {
        let id: approval_gate_actors::domain::ApprovalId = id.parse().expect("an approval id");
        let found = db_client
            .query_opt(
                "SELECT 1 FROM approvals WHERE id = $1",
                &[&id.to_bytes().as_slice()],
            )
            .await
            .expect("query");
        assert!(found.is_some(), "acknowledged {id} is in the database");
    }
    assert_eq!(
        status_of(&app, &before).await,
        "pending",
        "acknowledged before, still there"
    );
    assert_eq!(
        app.decide(&before, "approve").await.status(),
        StatusCode::OK
    );
}

/// A session grant given on one instance answers on another; revoked on a third, it stops
/// answering everywhere.
#[actix_rt::test]
async fn session_grants_are_shared_and_a_revocation_holds_on_every_instance() {
    let Some(db) = PgDatabase::create("cluster_grants").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let apps = cluster(dir.path(), &db, 3, &[]);
    let request =
        json!({"session_id": "s1", "tool_name": "Bash", "tool_input": {"command": "make test"}});
    let first = apps[0].create_id(&request).await;
    let decided = apps[0]
        .request(
            reqwest::Method::POST,
            &format!("/api/approvals/{first}/decision"),
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({"decision": "approve_session", "grant_for": "1h"}))
        .send()
        .await
        .expect("decide");
    assert_eq!(decided.status(), StatusCode::OK);
    // B heard of the approval (NOTIFY) and re-read the grants.
    eventually(Duration::from_secs(10), "B applies A's grant", || async {
        (apps[1].create_ok(&request).await["status"] == "approved").then_some(())
    })
    .await;
    let grants = apps[2].operator_json("/api/grants").await;
    let grant = grants["grants"][0]["id"]
        .as_str()
        .expect("grant id")
        .to_string();
    let revoked = apps[2]
        .request(
            reqwest::Method::DELETE,
            &format!("/api/grants/{grant}"),
            Some(OPERATOR_TOKEN),
        )
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success(), "{}", revoked.status());
    for app in &apps[..2] {
        assert_eq!(
            app.create_ok(&request).await["status"],
            "pending",
            "a grant revoked on C no longer answers on {}",
            app.address
        );
    }
}

/// Which of `apps` holds the Telegram poller's lease, if one does (and only one may).
async fn leader(apps: &[Option<ChildApp>]) -> Option<usize> {
    let mut leaders = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let Some(app) = app else { continue };
        let health = app.health().await;
        if health["actors"]["approval_registry"]["detail"]["database"]["telegram_poller"]["leader"]
            == true
        {
            leaders.push(i);
        }
    }
    assert!(leaders.len() <= 1, "one leader at most: {leaders:?}");
    leaders.first().copied()
}

/// The Telegram leader is killed with `kill -9` while approvals wait: another instance takes
/// the lease within `telegram.leader_lease`, a tap on a message the dead leader sent is applied
/// by the new one, once, and the backlog created meanwhile is sent once each.
#[actix_rt::test]
async fn the_telegram_leader_killed_is_replaced_within_the_lease_and_no_tap_is_lost() {
    use crate::support::fake_telegram::FakeTelegram;
    let Some(db) = PgDatabase::create("cluster_leader").await else {
        return;
    };
    let fake = FakeTelegram::start();
    let dir = tempfile::tempdir().expect("dir");
    let mut env = telegram_env(&fake.url(), fake.token());
    env.push(("APPROVAL_GATE__TELEGRAM__LEADER_LEASE".into(), "2s".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut apps: Vec<Option<ChildApp>> = cluster(dir.path(), &db, 3, &env)
        .into_iter()
        .map(Some)
        .collect();
    let first = eventually(Duration::from_secs(10), "a leader", || leader(&apps)).await;
    let other = (first + 1) % 3;
    let id = apps[other]
        .as_ref()
        .expect("up")
        .create_id(&new_approval())
        .await;
    let sent = eventually(
        Duration::from_secs(10),
        "the leader sent the message",
        || async { fake.messages().into_iter().find(|m| m.text.contains(&id)) },
    )
    .await;

    // kill -9: no release of the lease; it must lapse.
    let mut dead = apps[first].take().expect("leader");
    dead.signal(9);
    dead.wait_exit(Duration::from_secs(10));
    let killed_at = std::time::Instant::now();
    let second = eventually(Duration::from_secs(10), "a new leader", || leader(&apps)).await;
    assert_ne!(second, first);
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(2 + 2),
        "a new leader within the lease (+2 s): {takeover:?}"
    );

    // Approvals created while leaderless are sent by the new leader, once each.
    let mut backlog = Vec::new();
    for _ in 0..5 {
        backlog.push(
            apps[other]
                .as_ref()
                .expect("up")
                .create_id(&new_approval())
                .await,
        );
    }
    let query_id = fake.inject_callback(
        &crate::telegram::operator(),
        CHAT_ID,
        sent.message_id,
        &crate::telegram::button(&sent, "a:"),
    );
    fake.wait_for_answer(&query_id, Duration::from_secs(10))
        .await;
    let survivor = apps[other].as_ref().expect("up");
    assert_eq!(
        status_of(survivor, &id).await,
        "approved",
        "the tap was applied"
    );
    let approvals = history(survivor, &id)
        .await
        .iter()
        .filter(|e| e["kind"] == "approved")
        .count();
    assert_eq!(approvals, 1, "the tap was applied once");
    eventually(Duration::from_secs(10), "the backlog sent", || async {
        let messages = fake.messages();
        backlog
            .iter()
            .all(|id| messages.iter().any(|m| m.text.contains(id.as_str())))
            .then_some(())
    })
    .await;
    let messages = fake.messages();
    for id in &backlog {
        let copies = messages
            .iter()
            .filter(|m| m.text.contains(id.as_str()))
            .count();
        assert_eq!(copies, 1, "{id} announced once");
    }
    let conflicts = fake
        .calls_to("getUpdates")
        .iter()
        .filter(|call| !call.is_ok())
        .count();
    assert!(
        conflicts <= 2,
        "no storm of 409s from competing pollers: {conflicts}"
    );
}

/// The notification queues are shared: every instance shows their size, the leader within a
/// second and the others within 5 s (`notification::CountPacer`; docs/metrics.md), and both see
/// the queue empty once it is delivered.
#[actix_rt::test]
async fn every_instance_shows_the_shared_queues_size() {
    use crate::support::fake_telegram::{FakeTelegram, Fault};
    let Some(db) = PgDatabase::create("cluster_queue_size").await else {
        return;
    };
    let fake = FakeTelegram::start();
    // Nothing is sent while Telegram is unreachable: the entries wait in its queue.
    fake.set_down(Some(Fault::DropConnection), false);
    let dir = tempfile::tempdir().expect("dir");
    let env = telegram_env(&fake.url(), fake.token());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let apps: Vec<Option<ChildApp>> = cluster(dir.path(), &db, 2, &env)
        .into_iter()
        .map(Some)
        .collect();
    let first = eventually(Duration::from_secs(10), "a leader", || leader(&apps)).await;
    let (leader_app, follower) = (
        apps[first].as_ref().expect("up"),
        apps[1 - first].as_ref().expect("up"),
    );
    // Created on the leader: the follower hears of them only by counting the queue.
    for _ in 0..3 {
        leader_app.create_id(&new_approval()).await;
    }
    eventually(Duration::from_secs(5), "the leader counts three", || {
        shows(leader_app, 3.0)
    })
    .await;
    eventually(Duration::from_secs(10), "the follower counts three", || {
        shows(follower, 3.0)
    })
    .await;
    // And one created on the follower: the leader hears of it only by counting.
    follower.create_id(&new_approval()).await;
    eventually(Duration::from_secs(5), "the leader counts four", || {
        shows(leader_app, 4.0)
    })
    .await;
    fake.set_down(None, false);
    eventually(Duration::from_secs(15), "both count none", || async {
        shows(leader_app, 0.0).await?;
        shows(follower, 0.0).await
    })
    .await;
}

/// `Some` once `app`'s Telegram queue gauge shows `want`.
async fn shows(app: &ChildApp, want: f64) -> Option<()> {
    let size = metric(&app.metrics().await, "approval_gate_telegram_outbox_size");
    (size == Some(want)).then_some(())
}

/// A database that answers, slowly: reads give up after their deadline and are 503s, the
/// registry keeps answering health checks meanwhile, and all is well once the database is fast
/// again.
#[actix_rt::test]
async fn a_slow_database_holds_no_actor_past_its_read_deadline() {
    let Some(db) = PgDatabase::create("cluster_slow_database").await else {
        return;
    };
    let (proxy, app) = behind_a_proxy(&db, &[]).await;
    let id = app.create_id(&new_approval()).await;

    proxy.slow_down(Duration::from_secs(4));
    let started = std::time::Instant::now();
    let read = app.get(&id, None).await;
    let took = started.elapsed();
    assert_eq!(read.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(read.headers().get("retry-after").is_some());
    assert!(
        took < Duration::from_millis(3500),
        "gave up at its deadline: {took:?}"
    );
    // The registry's thread was not held: it answers a health check at once.
    let started = std::time::Instant::now();
    let health = app.health().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?} {health}",
        started.elapsed()
    );
    assert_eq!(
        health["actors"]["approval_registry"]["detail"]["database"]["reachable"], false,
        "health says the database does not answer in time: {health}"
    );

    proxy.slow_down(Duration::ZERO);
    eventually(Duration::from_secs(20), "reads answer again", || async {
        (app.get(&id, None).await.status() == StatusCode::OK).then_some(())
    })
    .await;
}

/// Webhook mode in a cluster: no instance polls; a tap delivered to any instance (not the
/// leader) is applied once and acknowledged, a redelivery of it to another instance decides
/// nothing more, and the leader edits the message.
#[actix_rt::test]
async fn in_webhook_mode_any_instance_takes_a_tap() {
    use crate::support::fake_telegram::FakeTelegram;
    let Some(db) = PgDatabase::create("cluster_webhook").await else {
        return;
    };
    let fake = FakeTelegram::start();
    let dir = tempfile::tempdir().expect("dir");
    let mut env = telegram_env(&fake.url(), fake.token());
    env.push(("APPROVAL_GATE__TELEGRAM__MODE".into(), "webhook".into()));
    env.push((
        "APPROVAL_GATE__TELEGRAM__WEBHOOK_URL".into(),
        "https://gate.example.com/telegram/webhook".into(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let apps: Vec<Option<ChildApp>> = cluster(dir.path(), &db, 3, &env)
        .into_iter()
        .map(Some)
        .collect();
    let lead = eventually(Duration::from_secs(10), "a leader", || leader(&apps)).await;
    fake.wait_until(Duration::from_secs(10), "setWebhook", |f| {
        f.webhook().is_some()
    })
    .await;
    let secret = fake
        .webhook()
        .and_then(|(_, s)| s)
        .expect("the webhook secret");
    let app = |i: usize| apps[i].as_ref().expect("up");
    let (first, second) = ((lead + 1) % 3, (lead + 2) % 3);

    let id = app(first).create_id(&new_approval()).await;
    let sent = eventually(Duration::from_secs(10), "the message sent", || async {
        fake.messages().into_iter().find(|m| m.text.contains(&id))
    })
    .await;
    fake.inject_callback(
        &crate::telegram::operator(),
        CHAT_ID,
        sent.message_id,
        &crate::telegram::button(&sent, "a:"),
    );
    let update = fake
        .take_update()
        .expect("the tap as Telegram would POST it");
    let deliver = |i: usize| {
        app(i)
            .client
            .post(format!("{}/telegram/webhook", app(i).address))
            .header("X-Telegram-Bot-Api-Secret-Token", secret.as_str())
            .json(&update)
            .send()
    };
    let answered = deliver(first).await.expect("delivered");
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(
        status_of(app(second), &id).await,
        "approved",
        "decided once the 200 came"
    );
    // Telegram redelivers to another instance: acknowledged, nothing decided again.
    let again = deliver(second).await.expect("redelivered");
    assert_eq!(again.status(), StatusCode::OK);
    let approvals = history(app(lead), &id)
        .await
        .iter()
        .filter(|e| e["kind"] == "approved")
        .count();
    assert_eq!(approvals, 1, "the tap was applied once");
    fake.wait_until(Duration::from_secs(10), "the message edited", |f| {
        f.message(CHAT_ID, sent.message_id)
            .is_some_and(|m| m.edits > 0)
    })
    .await;
    assert!(
        fake.calls_to("getUpdates").is_empty(),
        "no instance polls in webhook mode"
    );
}

/// An instance whose runtime is torn down without a stop (as an embedding's or a test's is when
/// it returns) still stops its actors: nothing keeps its database connections open after it.
#[test]
fn an_instance_dropped_without_a_stop_lets_go_of_its_database() {
    let runtime = actix_rt::System::new();
    let Some(db) = runtime.block_on(PgDatabase::create("dropped_without_a_stop")) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let env = test_env(
        dir.path(),
        &[
            ("APPROVAL_GATE__STORE__BACKEND", "postgres"),
            ("APPROVAL_GATE__STORE__POSTGRES__URL", db.url.as_str()),
        ],
    );
    let connections = || {
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            actix_rt::spawn(connection);
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .expect("count");
            row.get::<_, i64>(0)
        })
    };
    // The instance runs in a system of its own, which ends without stopping it.
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let settings = approval_gate::settings::load(&approval_gate::settings::Sources {
                config_file: None,
                env: Some(env),
            })
            .expect("settings");
            let app = approval_gate::startup::Application::build(settings).expect("starts");
            let address = format!("http://127.0.0.1:{}/health/ready", app.port());
            actix_rt::spawn(app.run_until_stopped());
            eventually(Duration::from_secs(20), "the instance ready", || async {
                let ready = reqwest::get(&address).await.ok()?;
                ready.status().is_success().then_some(())
            })
            .await;
        });
    })
    .join()
    .expect("the instance's thread");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let open = connections();
        if open == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} connection(s) still open 20 s after the instance's runtime ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
