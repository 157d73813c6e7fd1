//! The approval lifecycle over REST: create, read, list, decide, cancel, idempotency.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

#[actix_web::test]
async fn create_returns_201_with_location_and_the_pending_approval() {
    let app = spawn_app().await;
    let mut body = new_approval();
    body["timeout"] = json!("10m");
    let response = app.create(&body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let approval: Value = response.json().await.expect("json");

    let id = approval["id"].as_str().expect("id");
    assert_eq!(id.len(), 26, "a ULID");
    assert_eq!(location, format!("/api/approvals/{id}"));
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["session_id"], "session-1");
    assert_eq!(approval["tool_name"], "Bash");
    assert_eq!(approval["tool_input"], body["tool_input"]);
    assert_eq!(approval["reason"], "clean the build folder");
    assert_eq!(approval["decided_at"], Value::Null);
    assert_eq!(approval["decided_by"], Value::Null);
    assert_eq!(approval["comment"], Value::Null);
    let lifetime = ts(&approval["expires_at"]) - ts(&approval["created_at"]);
    assert_eq!(lifetime.num_seconds(), 600);

    let fetched: Value = app.get(id, None).await.json().await.expect("json");
    assert_eq!(fetched, approval);
}

#[actix_web::test]
async fn tool_input_is_kept_byte_for_byte() {
    let app = spawn_app().await;
    // A NUL character is valid JSON that PostgreSQL's jsonb cannot hold.
    let raw = r#"{"session_id":"s","tool_name":"Write","tool_input":{"z":1,"a":[true,null,1.5e3],"m":{"é":"✓"},"n":"a\u0000b"}}"#;
    let response = app
        .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.expect("text");
    assert!(
        text.contains(r#""tool_input":{"z":1,"a":[true,null,1.5e3],"m":{"é":"✓"},"n":"a\u0000b"}"#),
        "{text}"
    );
}

#[actix_web::test]
async fn default_timeout_applies_when_none_is_given() {
    let app = spawn_app().await;
    let approval = app.create_ok(&new_approval()).await;
    let lifetime = ts(&approval["expires_at"]) - ts(&approval["created_at"]);
    assert_eq!(lifetime.num_minutes(), 30);
}

#[actix_web::test]
async fn operator_approves_and_the_decision_records_who() {
    let app = spawn_app().await;
    let approval = app.create_ok(&new_approval()).await;
    let id = approval["id"].as_str().expect("id");

    let response = app.decide(id, "approve").await;
    assert_eq!(response.status(), StatusCode::OK);
    let decided: Value = response.json().await.expect("json");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decided_by"], "alice");
    assert_eq!(decided["decider"]["kind"], "operator");
    assert_eq!(decided["comment"], "from the tests");
    assert!(ts(&decided["decided_at"]) >= ts(&decided["created_at"]));

    let fetched: Value = app.get(id, None).await.json().await.expect("json");
    assert_eq!(fetched["status"], "approved");
}

#[actix_web::test]
async fn operator_rejects() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    let decided: Value = app.decide(&id, "reject").await.json().await.expect("json");
    assert_eq!(decided["status"], "rejected");
}

#[actix_web::test]
async fn a_decided_approval_answers_409_with_the_winner() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    assert_eq!(app.decide(&id, "reject").await.status(), StatusCode::OK);

    let response = app.decide(&id, "approve").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "already_decided");
    assert_eq!(body["approval"]["status"], "rejected");
    assert_eq!(body["approval"]["id"], id);
}

#[actix_web::test]
async fn agent_cancels_its_own_pending_request_once() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;

    let response = app.cancel(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cancelled: Value = response.json().await.expect("json");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["decider"]["kind"], "agent");

    let again = app.cancel(&id).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["approval"]["status"], "cancelled");

    let too_late = app.decide(&id, "approve").await;
    assert_eq!(too_late.status(), StatusCode::CONFLICT);
}

#[actix_web::test]
async fn an_agent_cannot_cancel_another_agents_request() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;
    let response = app
        .request(
            Method::DELETE,
            &format!("/api/approvals/{id}"),
            Some(OTHER_AGENT_TOKEN),
        )
        .send()
        .await
        .expect("send");
    // Another agent's approval does not exist as far as this agent can tell.
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let status: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(status["status"], "pending");
}

#[actix_web::test]
async fn a_repeated_idempotency_key_returns_the_original() {
    let app = spawn_app().await;
    let mut body = new_approval();
    body["idempotency_key"] = json!("tool-call-42");
    let first = app.create_ok(&body).await;

    let second = app.create(&body).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.expect("json");
    assert_eq!(second["id"], first["id"]);

    // The key is scoped to the agent: another agent's same key is a new approval.
    let other = app
        .request(Method::POST, "/api/approvals", Some(OTHER_AGENT_TOKEN))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(other.status(), StatusCode::CREATED);
    let other: Value = other.json().await.expect("json");
    assert_ne!(other["id"], first["id"]);

    let listed = list(&app, "").await;
    assert_eq!(listed["approvals"].as_array().map(Vec::len), Some(2));
}

async fn list(app: &TestApp, query: &str) -> Value {
    let response = app.list(query).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

#[actix_web::test]
async fn list_is_newest_first_paginated_and_filtered() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = new_approval();
        body["session_id"] = json!(format!("s{i}"));
        ids.push(app.create_id(&body).await);
    }
    app.decide(&ids[1], "approve").await;

    let page1 = list(&app, "?limit=2").await;
    let got: Vec<&str> = page1["approvals"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(got, vec![ids[4].as_str(), ids[3].as_str()]);
    let cursor = page1["next_cursor"].as_str().expect("more pages");

    let page2 = list(&app, &format!("?limit=2&cursor={cursor}")).await;
    let got: Vec<&str> = page2["approvals"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()]);

    let page3 = list(
        &app,
        &format!(
            "?limit=2&cursor={}",
            page2["next_cursor"].as_str().expect("cursor")
        ),
    )
    .await;
    assert_eq!(page3["approvals"].as_array().map(Vec::len), Some(1));
    assert_eq!(page3["next_cursor"], Value::Null);

    let pending = list(&app, "?status=pending&limit=50").await;
    let got: Vec<&str> = pending["approvals"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(
        got,
        vec![
            ids[4].as_str(),
            ids[3].as_str(),
            ids[2].as_str(),
            ids[0].as_str()
        ]
    );

    let approved = list(&app, "?status=approved").await;
    assert_eq!(approved["approvals"][0]["id"], ids[1]);
}

/// Stores index approvals by status only while they are pending (sled keeps no key per ended
/// approval), so a list by an ended status is a search: one request reads at most
/// `console.search_scan_limit` approvals and answers with a cursor to go on from; following it
/// finds what is further back. A list of the pending ones still reads the index.
#[actix_web::test]
async fn a_list_by_an_ended_status_reads_a_bounded_page_and_goes_on_by_cursor() {
    let (app, oldest) = spawn_app_with_an_approval_behind_the_scan_limit().await;
    let first = list(&app, "?status=approved&limit=5").await;
    assert_eq!(first["approvals"], json!([]), "{first}");
    assert_eq!(first["scanned"], 500, "bounded by the scan limit");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a cursor to go on from");
    let second = list(&app, &format!("?status=approved&limit=5&cursor={cursor}")).await;
    assert_eq!(second["approvals"][0]["id"], oldest.as_str());
    assert_eq!(second["approvals"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["next_cursor"], Value::Null);
    let pending = list(&app, "?status=pending&limit=5").await;
    assert_eq!(pending["approvals"].as_array().map(Vec::len), Some(5));
    assert!(
        pending.get("scanned").is_none(),
        "the index, no scan: {pending}"
    );
}
