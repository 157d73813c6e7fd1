//! `approval-gate approvals …`: the compiled CLI against the real service. The child runs under
//! `tokio::process` so the test thread keeps serving the in-process app while it waits.

use serde_json::Value;

use crate::helpers::*;

/// `approval-gate approvals --url <url> <args…>` with `token` in APPROVAL_GATE_OPERATOR_TOKEN.
async fn cli(url: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_approval-gate"));
    command
        .args(["approvals", "--url", url])
        .args(args)
        .env_remove("APPROVAL_GATE_URL")
        .env_remove("APPROVAL_GATE_OPERATOR_TOKEN")
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("APPROVAL_GATE_OPERATOR_TOKEN", token);
    }
    let output = command.output().await.expect("run approval-gate approvals");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn operator(app: &TestApp, args: &[&str]) -> Run {
    cli(&app.address, Some(OPERATOR_TOKEN), args).await
}

async fn approval(app: &TestApp, id: &str) -> Value {
    app.get(id, None).await.json().await.expect("approval json")
}

#[actix_web::test]
async fn list_shows_pending_approvals() {
    let app = spawn_app().await;
    let empty = operator(&app, &["list"]).await;
    assert_eq!(empty.code, Some(0), "{empty:?}");
    assert_eq!(empty.stdout, "no pending approvals\n", "{empty:?}");

    let created = app.create_ok(&new_approval()).await;
    let id = created["id"].as_str().unwrap();
    let table = operator(&app, &["list"]).await;
    assert_eq!(table.code, Some(0), "{table:?}");
    let mut lines = table.stdout.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ID ") && header.contains("EXPIRES IN"),
        "{table:?}"
    );
    let row = lines.next().unwrap();
    for cell in [id, "pending", "Bash", "session-1", "clean the build folder"] {
        assert!(row.contains(cell), "{cell} missing: {table:?}");
    }

    let json = operator(&app, &["list", "--json", "--status", "all"]).await;
    let page: Value = serde_json::from_str(&json.stdout).expect("--json prints JSON");
    assert_eq!(page["approvals"][0]["id"], id, "{json:?}");
    assert_eq!(
        page["approvals"][0]["tool_input"]["command"],
        "rm -rf ./build"
    );
}

#[actix_web::test]
async fn approve_decides_once() {
    let app = spawn_app().await;
    let id = app.create_ok(&new_approval()).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let approved = operator(&app, &["approve", &id]).await;
    assert_eq!(approved.code, Some(0), "{approved:?}");
    assert_eq!(
        approved.stdout,
        format!("approved {id} (Bash in session session-1)\n")
    );
    let stored = approval(&app, &id).await;
    assert_eq!(stored["status"], "approved");
    assert_eq!(stored["decided_by"], "alice");

    let again = operator(&app, &["approve", &id]).await;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(
        again.stderr.contains("already approved by alice"),
        "{again:?}"
    );
}

#[actix_web::test]
async fn reject_stores_the_comment() {
    let app = spawn_app().await;
    let id = app.create_ok(&new_approval()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rejected = operator(&app, &["reject", &id, "--comment", "not on a Friday"]).await;
    assert_eq!(rejected.code, Some(0), "{rejected:?}");
    assert!(rejected.stdout.starts_with("rejected "), "{rejected:?}");
    let stored = approval(&app, &id).await;
    assert_eq!(stored["status"], "rejected");
    assert_eq!(stored["comment"], "not on a Friday");
}

#[actix_web::test]
async fn show_prints_fields_and_tool_input() {
    let app = spawn_app().await;
    let id = app.create_ok(&new_approval()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let show = operator(&app, &["show", &id]).await;
    assert_eq!(show.code, Some(0), "{show:?}");
    for line in [
        format!("id:           {id}"),
        "status:       pending".into(),
        "reason:       clean the build folder".into(),
        "requested_by: ci_agent".into(),
        "tool_input:".into(),
        r#"    "command": "rm -rf ./build","#.into(),
    ] {
        assert!(show.stdout.lines().any(|l| l == line), "{line:?}: {show:?}");
    }
}

#[actix_web::test]
async fn wrong_token_is_401_with_a_hint() {
    let app = spawn_app().await;
    let run = cli(&app.address, Some("not-the-operator-token"), &["list"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("(unauthorized, HTTP 401)"), "{run:?}");
    assert!(
        run.stderr.contains("APPROVAL_GATE_OPERATOR_TOKEN"),
        "{run:?}"
    );
}

#[actix_web::test]
async fn unreachable_service_says_so() {
    // A port that was free a moment ago; nothing listens on it now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = cli(&url, Some(OPERATOR_TOKEN), &["list"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach approval-gate at {url}: ")),
        "{run:?}"
    );
    assert!(run.stderr.contains("is it running?"), "{run:?}");
}

#[actix_web::test]
async fn unknown_id_is_404() {
    let app = spawn_app().await;
    let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    for args in [["show", id], ["approve", id]] {
        let run = operator(&app, &args).await;
        assert_eq!(run.code, Some(1), "{run:?}");
        assert_eq!(
            run.stderr,
            format!("error: no approval with id {id} (not_found, HTTP 404)\n")
        );
    }
}

#[actix_web::test]
async fn a_two_person_approval_is_counted_from_the_cli_which_shows_its_risk() {
    let (app, _config) = crate::quorum::two_person_app(&[]).await;
    let id = app.create_id(&crate::quorum::terraform("destroy")).await;
    let list = operator(&app, &["list"]).await;
    let row = list.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.contains("HIGH"), "the RISK column: {list:?}");
    let counted = operator(&app, &["approve", &id]).await;
    assert_eq!(counted.code, Some(0), "{counted:?}");
    assert_eq!(
        counted.stdout,
        format!(
            "approval counted: 1 of 2 approved (alice) — {id} (Bash in session s1) needs another operator\n"
        )
    );
    let again = operator(&app, &["approve", &id]).await;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("already counted"), "{again:?}");
    let shown = operator(&app, &["show", &id]).await;
    for line in [
        "risk:         HIGH",
        "- detector:destructive_command: destroys infrastructure",
        "approvals:    1 of 2 approved (alice)",
    ] {
        assert!(shown.stdout.contains(line), "{line}: {shown:?}");
    }
    let second = cli(
        &app.address,
        Some(crate::quorum::BOB_TOKEN),
        &["approve", &id],
    )
    .await;
    assert_eq!(second.code, Some(0), "{second:?}");
    assert!(
        second.stdout.starts_with(&format!("approved {id}")),
        "{second:?}"
    );
    assert_eq!(approval(&app, &id).await["decided_by"], "bob");
}

/// A list by an ended status is a bounded search on the service (a page may be empty and have a
/// cursor): the CLI goes on past empty pages, so `--status approved` finds an approval behind
/// more than `console.search_scan_limit` newer ones, and `--all-pages` finds every one.
#[actix_web::test]
async fn listing_an_ended_status_goes_on_past_pages_the_search_found_nothing_in() {
    let (app, oldest) = spawn_app_with_an_approval_behind_the_scan_limit().await;
    for args in [
        &["list", "--status", "approved"][..],
        &["list", "--status", "approved", "--all-pages", "--json"][..],
    ] {
        let run = operator(&app, args).await;
        assert_eq!(run.code, Some(0), "{run:?}");
        assert!(run.stdout.contains(&oldest), "{args:?} found it: {run:?}");
    }
}
