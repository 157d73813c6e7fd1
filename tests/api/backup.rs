//! Online backup and offline restore, through the compiled binary: a backup taken while the
//! service runs, restored into a new store, is a service that takes decisions.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_approval-gate"))
        .args(args)
        .env("APPROVAL_GATE_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env_remove("APPROVAL_GATE_URL")
        .output()
        .expect("run the CLI")
}

/// `approval-gate backup --url` of a running service into `file`; it must succeed.
async fn take_backup(service: &str, file: &std::path::Path) {
    let (url, file) = (service.to_string(), file.display().to_string());
    let taken = tokio::task::spawn_blocking(move || cli(&["backup", "--url", &url, &file]))
        .await
        .unwrap();
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
}

/// `approval-gate restore FILE --store PATH`; it must succeed.
fn restore_store(file: &std::path::Path, store: &std::path::Path) {
    let restored = cli(&[
        "restore",
        &file.display().to_string(),
        "--store",
        &store.display().to_string(),
    ]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
}

#[actix_web::test]
async fn a_backup_restored_into_a_new_store_takes_decisions() {
    if sled_only("a_backup_restored_into_a_new_store_takes_decisions") {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    let child = spawn_binary(source.path(), &[]);
    let pending = child.create_id(&new_approval()).await;
    let mut granted = new_approval();
    granted["session_id"] = json!("granted-session");
    let decided = child.create_id(&granted).await;
    let response = child.decide(&decided, "approve_session").await;
    assert_eq!(response.status(), StatusCode::OK);
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(AGENT_TOKEN), StatusCode::FORBIDDEN),
    ] {
        let refused = child
            .request(Method::GET, "/api/admin/backup", token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), status);
    }

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("gate.backup");
    take_backup(&child.address, &file).await;
    drop(child);

    // Refused: a non-empty folder, and a truncated file (which leaves nothing behind).
    let occupied = work.path().join("occupied");
    std::fs::create_dir_all(occupied.join("x")).unwrap();
    let refused = cli(&[
        "restore",
        &file.display().to_string(),
        "--store",
        &occupied.display().to_string(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    let bytes = std::fs::read(&file).unwrap();
    let truncated = work.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() - 20]).unwrap();
    let half = work.path().join("half");
    let refused = cli(&[
        "restore",
        &truncated.display().to_string(),
        "--store",
        &half.display().to_string(),
    ]);
    assert!(!refused.status.success());
    assert!(!half.exists(), "no half-restored store is left");

    let target = tempfile::tempdir().unwrap();
    restore_store(&file, &target.path().join("store"));

    // The restored service: spawn_binary puts its store at <dir>/store.
    let child = spawn_binary(target.path(), &[]);
    let page: Value = child.list("?status=pending").await.json().await.unwrap();
    assert_eq!(page["approvals"][0]["id"], pending.as_str());
    let decision = child.decide(&pending, "approve").await;
    assert_eq!(decision.status(), StatusCode::OK);
    // The grant came along: the same tool in that session is approved at once.
    let again = child.create_ok(&granted).await;
    assert_eq!(again["status"], "approved");
    let history = child
        .operator_json(&format!("/api/approvals/{decided}/events"))
        .await;
    assert!(
        history["events"].as_array().is_some_and(|e| e.len() >= 2),
        "{history}"
    );
}

/// The way between the backends, as a user takes it: a sled service's backup restored into
/// PostgreSQL (`restore --to`), backed up from there (`backup --from`) and restored into a new
/// sled store, which serves the same approvals, grants and history.
#[actix_web::test]
async fn a_store_moves_to_postgres_and_back_through_the_cli() {
    if sled_only("a_store_moves_to_postgres_and_back_through_the_cli") {
        return;
    }
    let Some(database) = PgDatabase::create("a_store_moves_to_postgres_and_back").await else {
        return;
    };
    let source = tempfile::tempdir().unwrap();
    let child = spawn_binary(source.path(), &[]);
    let pending = child.create_id(&new_approval()).await;
    let pending_expiry = child
        .get(&pending, None)
        .await
        .json::<Value>()
        .await
        .unwrap()["expires_at"]
        .clone();
    let mut granted = new_approval();
    granted["session_id"] = json!("granted-session");
    let decided = child.create_id(&granted).await;
    assert_eq!(
        child.decide(&decided, "approve_session").await.status(),
        StatusCode::OK
    );
    let work = tempfile::tempdir().unwrap();
    let from_sled = work.path().join("from-sled.backup");
    let (url, file) = (child.address.clone(), from_sled.display().to_string());
    let taken = tokio::task::spawn_blocking(move || cli(&["backup", "--url", &url, &file]))
        .await
        .unwrap();
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    drop(child);

    // Into PostgreSQL, with the URL read from a file (so it is not in the process list).
    let url_file = work.path().join("postgres-url");
    std::fs::write(&url_file, format!("{}\n", database.url)).unwrap();
    let to = format!("file:{}", url_file.display());
    let restored = cli(&["restore", &from_sled.display().to_string(), "--to", &to]);
    let said = String::from_utf8_lossy(&restored.stderr);
    assert!(restored.status.success(), "{said}");
    assert!(said.contains("2 approvals"), "{said}");
    assert!(
        !said.contains(&database.url),
        "the URL is never printed: {said}"
    );
    let pg = database.client().await;
    let pending_rows: i64 = pg
        .query_one("SELECT count(*) FROM approvals WHERE status = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending_rows, 1);
    // A second restore into the same database is refused: it is not empty.
    let again = cli(&["restore", &from_sled.display().to_string(), "--to", &to]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds 2 approvals"));

    // Served from PostgreSQL: the pending approval waits with its deadline, the grant answers,
    // the history came along.
    let before: Value = {
        let page: Value = {
            let folder = source.path().join("on-postgres");
            std::fs::create_dir_all(&folder).unwrap();
            let served = spawn_binary(
                &folder,
                &[
                    ("APPROVAL_GATE__STORE__BACKEND", "postgres"),
                    ("APPROVAL_GATE__STORE__POSTGRES__URL", to.as_str()),
                ],
            );
            let page: Value = served.list("?status=pending").await.json().await.unwrap();
            assert_eq!(
                served.create_ok(&granted).await["status"],
                "approved",
                "the grant answers on PostgreSQL"
            );
            let history = served
                .operator_json(&format!("/api/approvals/{decided}/events"))
                .await;
            assert!(
                history["events"].as_array().is_some_and(|e| e.len() >= 2),
                "{history}"
            );
            page
        };
        page
    };
    assert_eq!(before["approvals"][0]["id"], pending.as_str());
    assert_eq!(
        before["approvals"][0]["expires_at"], pending_expiry,
        "the deadline came along"
    );
    assert_eq!(
        before["approvals"].as_array().map(Vec::len),
        Some(1),
        "{before}"
    );

    // And back: a backup of PostgreSQL restored into a new sled store.
    let from_pg = work.path().join("from-postgres.backup");
    let exported = cli(&["backup", &from_pg.display().to_string(), "--from", &to]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let target = tempfile::tempdir().unwrap();
    let store = target.path().join("store");
    let back = cli(&[
        "restore",
        &from_pg.display().to_string(),
        "--store",
        &store.display().to_string(),
    ]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    let child = spawn_binary(target.path(), &[]);
    let page: Value = child.list("?status=pending").await.json().await.unwrap();
    assert_eq!(page["approvals"][0]["id"], pending.as_str());
    assert_eq!(
        child.decide(&pending, "approve").await.status(),
        StatusCode::OK
    );
    let again = child.create_ok(&granted).await;
    assert_eq!(
        again["status"], "approved",
        "the grant came along both ways"
    );
    let history = child
        .operator_json(&format!("/api/approvals/{decided}/events"))
        .await;
    assert!(
        history["events"].as_array().is_some_and(|e| e.len() >= 2),
        "{history}"
    );
}
