//! Nothing acknowledged is lost: restarts keep pending approvals decidable and re-arm their
//! deadlines, SIGKILL right after a 201 loses nothing (the journal replays it), undelivered
//! notifications outlive the journal file that held them, a failed checkpoint keeps the journal,
//! SIGTERM drains and exits 0, and a second service on the same store is refused.
//! These run the compiled binary as a child process against one store folder.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

#[actix_web::test]
async fn sigterm_exits_cleanly_and_a_restart_keeps_pending_approvals_decidable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = spawn_binary(dir.path(), &[]);
    let pending = first.create_id(&new_approval()).await;
    let decided = first.create_id(&new_approval()).await;
    assert_eq!(
        first.decide(&decided, "approve").await.status(),
        StatusCode::OK
    );

    first.signal(SIGTERM);
    let status = first.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    drop(first);

    let second = spawn_binary(dir.path(), &[]);
    let body: Value = second.get(&pending, None).await.json().await.expect("json");
    assert_eq!(body["status"], "pending");
    let body: Value = second.get(&decided, None).await.json().await.expect("json");
    assert_eq!(body["status"], "approved");

    let poll = second.get(&pending, Some("30s"));
    let decide = async {
        eventually(
            Duration::from_secs(10),
            "the long poll to register",
            || async {
                (metric(&second.metrics().await, "approval_gate_waiters") == Some(1.0))
                    .then_some(())
            },
        )
        .await;
        second.decide(&pending, "reject").await
    };
    let (polled, decision) = futures_util::join!(poll, decide);
    assert_eq!(decision.status(), StatusCode::OK);
    let polled: Value = polled.json().await.expect("json");
    assert_eq!(polled["status"], "rejected");
    let text = second.metrics().await;
    assert_eq!(metric(&text, "approval_gate_pending_approvals"), Some(0.0));
}

#[actix_web::test]
async fn sigkill_right_after_201_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = spawn_binary(dir.path(), &[]);
    // A burst, so several creates share group commits, then SIGKILL the moment all are answered.
    let bodies: Vec<Value> = (0..50)
        .map(|i| {
            let mut body = new_approval();
            body["session_id"] = json!(format!("kill-{i}"));
            body
        })
        .collect();
    let created = futures_util::future::join_all(bodies.iter().map(|b| first.create_ok(b))).await;
    let decided = created[0]["id"].as_str().expect("id").to_string();
    assert_eq!(
        first.decide(&decided, "approve").await.status(),
        StatusCode::OK
    );
    first.signal(SIGKILL);
    drop(first);

    let second = spawn_binary(dir.path(), &[]);
    for approval in &created {
        let id = approval["id"].as_str().expect("id");
        let response = second.get(id, None).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "approval {id} survived SIGKILL"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["session_id"], approval["session_id"]);
    }
    let body: Value = second.get(&decided, None).await.json().await.expect("json");
    assert_eq!(
        body["status"], "approved",
        "an acknowledged decision survives SIGKILL too"
    );
}

/// With checkpoints an hour apart, nothing but the journal is sure to hold what was acknowledged
/// (sled is not flushed for it): SIGKILL (and a torn append after it), and the restart replays
/// the journal, skips the torn tail and has all of it.
/// A graceful stop then flushes sled and leaves no journal to replay.
#[actix_web::test]
async fn the_journal_brings_back_every_acknowledged_write_after_sigkill() {
    if sled_only("the_journal_brings_back_every_acknowledged_write_after_sigkill") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let rare_checkpoints = [("APPROVAL_GATE__STORE__CHECKPOINT_EVERY", "1h")];
    let first = spawn_binary(dir.path(), &rare_checkpoints);
    let bodies: Vec<Value> = (0..20).map(|_| new_approval()).collect();
    let created = futures_util::future::join_all(bodies.iter().map(|b| first.create_id(b))).await;
    assert_eq!(
        first.decide(&created[0], "reject").await.status(),
        StatusCode::OK
    );
    first.signal(SIGKILL);
    drop(first);
    // And a crash in the middle of the next append: half a record at the journal's end.
    let journal = newest_journal(&dir.path().join("store"));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .expect("journal");
    std::io::Write::write_all(&mut file, &[200, 0, 0, 0, 1, 2, 3]).expect("torn tail");
    drop(file);

    let mut second = spawn_binary(dir.path(), &rare_checkpoints);
    let replayed =
        second.get_json("/api/diagnostics/database").await["journal_replayed_at_start"].clone();
    assert!(
        replayed["records"].as_u64().is_some_and(|n| n >= 1),
        "the restart replayed the journal: {replayed}"
    );
    assert_eq!(replayed["torn"], 1, "the torn tail was skipped: {replayed}");
    for id in &created {
        assert_eq!(second.get(id, None).await.status(), StatusCode::OK, "{id}");
    }
    let rejected: Value = second
        .get(&created[0], None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rejected["status"], "rejected");
    second.signal(SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(20)).success());
    drop(second);

    let third = spawn_binary(dir.path(), &rare_checkpoints);
    let replayed =
        third.get_json("/api/diagnostics/database").await["journal_replayed_at_start"].clone();
    assert_eq!(
        replayed["records"], 0,
        "a graceful stop leaves nothing to replay: {replayed}"
    );
    assert_eq!(third.get(&created[1], None).await.status(), StatusCode::OK);
}

/// Undelivered notifications that only the journal held are spilled into sled before a
/// checkpoint retires the journal file: after that file is gone, SIGKILL, and the restart still
/// delivers every one of them.
#[actix_web::test]
async fn undelivered_notifications_outlive_the_checkpoint_that_retires_their_journal() {
    if sled_only("undelivered_notifications_outlive_the_checkpoint_that_retires_their_journal") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // The file channel cannot write while `blocked` is a file where its folder should be.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"").expect("blocker");
    let notifications = blocked.join("notifications.jsonl");
    let notifications_path = notifications.display().to_string();
    let settings = [
        ("APPROVAL_GATE__FALLBACK__ORDER", "file"),
        (
            "APPROVAL_GATE__FALLBACK__FILE_PATH",
            notifications_path.as_str(),
        ),
        ("APPROVAL_GATE__FALLBACK__MAX_ATTEMPTS", "100"),
        ("APPROVAL_GATE__FALLBACK__RETRY_DELAY", "60s"),
        ("APPROVAL_GATE__STORE__CHECKPOINT_EVERY", "10ms"),
    ];
    let first = spawn_binary(dir.path(), &settings);
    let bodies: Vec<Value> = (0..5).map(|_| new_approval()).collect();
    let mut created =
        futures_util::future::join_all(bodies.iter().map(|b| first.create_id(b))).await;
    // The journal files that may hold the creates: all of them retired means sled holds
    // everything they did.
    let store = dir.path().join("store");
    let holding = newest_generation(&store);
    created.extend(write_until_retired(&first, &store, holding).await);
    eventually(
        Duration::from_secs(10),
        "every queue entry spilled into sled",
        || async {
            let database = first.get_json("/api/diagnostics/database").await;
            (database["queue_entries_unspilled"] == 0).then_some(())
        },
    )
    .await;
    first.signal(SIGKILL);
    drop(first);

    std::fs::remove_file(&blocked).expect("unblock the file channel");
    let _second = spawn_binary(dir.path(), &settings);
    let written = eventually(
        Duration::from_secs(10),
        "every notification written after the restart",
        || async {
            let text = std::fs::read_to_string(&notifications).unwrap_or_default();
            created
                .iter()
                .all(|id| text.contains(id.as_str()))
                .then_some(text)
        },
    )
    .await;
    assert_eq!(written.lines().count(), created.len(), "{written}");
}

/// A checkpoint that fails (sled's flush refused, as on a full disk) keeps the journal files it
/// was to retire: after several failed checkpoints and a SIGKILL, the restart replays them all
/// and has every approval; a checkpoint that succeeds after failures retires the files they kept.
#[actix_web::test]
async fn a_failed_checkpoint_keeps_the_journal_and_a_later_one_retires_it() {
    if sled_only("a_failed_checkpoint_keeps_the_journal_and_a_later_one_retires_it") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let settings = [("APPROVAL_GATE__STORE__CHECKPOINT_EVERY", "10ms")];
    let first = spawn_binary(dir.path(), &settings);
    fail_checkpoints(&first, 1000).await;
    // Only a journal that holds something is cut for a checkpoint: keep writing.
    let mut created = Vec::new();
    while checkpoint_failures(&first).await < 3 {
        created.push(first.create_id(&new_approval()).await);
    }
    let kept = journal_generations(&store).len();
    assert!(kept >= 3, "the failed checkpoints kept their files: {kept}");
    first.signal(SIGKILL);
    drop(first);

    let second = spawn_binary(dir.path(), &settings);
    let database = second.get_json("/api/diagnostics/database").await;
    let replayed = &database["journal_replayed_at_start"];
    assert!(
        replayed["files"].as_u64().is_some_and(|n| n >= 3),
        "every kept file was replayed: {replayed}"
    );
    for id in &created {
        assert_eq!(second.get(id, None).await.status(), StatusCode::OK, "{id}");
    }

    fail_checkpoints(&second, 2).await;
    while checkpoint_failures(&second).await < 2 {
        second.create_id(&new_approval()).await;
    }
    let failed_over = newest_generation(&store);
    write_until_retired(&second, &store, failed_over).await;
}

async fn checkpoint_failures(app: &ChildApp) -> u64 {
    let database = app.get_json("/api/diagnostics/database").await;
    database["commits"]["checkpoint_failures"]
        .as_u64()
        .expect("checkpoint_failures")
}

/// Create approvals until every journal file up to `generation` is retired (a checkpoint made
/// sled hold all they held): only a journal that holds something is cut for a checkpoint. The
/// ids created meanwhile.
async fn write_until_retired(
    app: &ChildApp,
    store: &std::path::Path,
    generation: u64,
) -> Vec<String> {
    let mut created = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while journal_generations(store)
        .into_iter()
        .min()
        .is_none_or(|oldest| oldest <= generation)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint retired journal generation {generation}"
        );
        created.push(app.create_id(&new_approval()).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    created
}

fn newest_generation(store: &std::path::Path) -> u64 {
    journal_generations(store)
        .into_iter()
        .max()
        .expect("a journal file")
}

/// The generations of the journal files in a store folder (the spare is not one).
fn journal_generations(store: &std::path::Path) -> Vec<u64> {
    std::fs::read_dir(store)
        .expect("store folder")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            name.to_str()?.strip_prefix("journal-")?.parse().ok()
        })
        .collect()
}

/// The journal file with the highest generation in a store folder.
fn newest_journal(store: &std::path::Path) -> std::path::PathBuf {
    store.join(format!("journal-{:020}", newest_generation(store)))
}

#[actix_web::test]
async fn deadlines_are_rearmed_and_missed_ones_time_out_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = spawn_binary(dir.path(), &[]);
    let mut body = new_approval();
    body["timeout"] = json!("1s");
    let missed_approval = first.create_ok(&body).await;
    let missed = missed_approval["id"].as_str().expect("id").to_string();
    body["timeout"] = json!("6s");
    let later = first.create_id(&body).await;
    first.signal(SIGKILL);
    drop(first);

    // Stay down until the first deadline (grace is 0 in tests) has passed.
    let deadline = ts(&missed_approval["expires_at"]).with_timezone(&chrono::Utc);
    let remaining = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(remaining + Duration::from_millis(50)).await;
    let second = spawn_binary(dir.path(), &[]);
    let ended: Value = second
        .get(&missed, Some("5s"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ended["status"], "timed_out");
    let comment = ended["comment"].as_str().unwrap_or("");
    assert!(
        comment.contains("not running"),
        "says it expired while down: {comment}"
    );

    let ended: Value = second
        .get(&later, Some("10s"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        ended["status"], "timed_out",
        "re-armed deadline fires after the restart"
    );
    let late = ts(&ended["decided_at"]) - ts(&ended["expires_at"]);
    assert!(late < chrono::Duration::seconds(1), "{late}");
}

/// A second service started on a store another one serves is refused at start, naming the
/// folder (sled's own lock error was an untyped "could not acquire lock … WouldBlock"), before
/// it touches the journal; the first goes on serving.
#[actix_web::test]
async fn a_second_service_on_the_same_store_is_refused_and_the_first_keeps_serving() {
    if sled_only("a_second_service_on_the_same_store_is_refused_and_the_first_keeps_serving") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_binary(dir.path(), &[]);
    let before = first.create_id(&new_approval()).await;

    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_approval-gate"))
        .arg("serve")
        .env_clear()
        .envs(test_env(dir.path(), &[]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a second approval-gate");
    let started = std::time::Instant::now();
    let exited = loop {
        if let Some(status) = second.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = second.kill();
            panic!("a second service on the same store started");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(exited.code(), Some(1), "{stderr}");
    let store = dir.path().join("store");
    assert!(
        stderr.contains(&format!(
            "the store at {} is in use by another process",
            store.display()
        )),
        "{stderr}"
    );

    let after = first.create_id(&new_approval()).await;
    for id in [before, after] {
        let response = first.get(&id, None).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}
