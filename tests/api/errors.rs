//! Bad input and bad credentials get a clear JSON error with a stable code and the right status.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

#[actix_web::test]
async fn missing_or_wrong_token_is_401() {
    let app = spawn_app().await;
    let none = app
        .request(Method::POST, "/api/approvals", None)
        .json(&new_approval())
        .send()
        .await
        .expect("send");
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    expect_error(none, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let wrong = app
        .request(
            Method::GET,
            "/api/approvals",
            Some("not-a-real-token-at-all"),
        )
        .send()
        .await
        .expect("send");
    expect_error(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Authentication comes before body parsing: garbage with no token is still a 401.
    let garbage = app
        .request(Method::POST, "/api/approvals", None)
        .body("{not json")
        .send()
        .await
        .expect("send");
    expect_error(garbage, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[actix_web::test]
async fn tokens_of_the_wrong_role_are_403() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;

    let agent_lists = app
        .request(Method::GET, "/api/approvals", Some(AGENT_TOKEN))
        .send()
        .await
        .expect("send");
    expect_error(agent_lists, StatusCode::FORBIDDEN, "forbidden").await;

    let agent_decides = app
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(AGENT_TOKEN),
        )
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .expect("send");
    expect_error(agent_decides, StatusCode::FORBIDDEN, "forbidden").await;

    let operator_creates = app
        .request(Method::POST, "/api/approvals", Some(OPERATOR_TOKEN))
        .json(&new_approval())
        .send()
        .await
        .expect("send");
    expect_error(operator_creates, StatusCode::FORBIDDEN, "forbidden").await;

    // The approval is untouched by all of that.
    let current: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(current["status"], "pending");
}

#[actix_web::test]
async fn malformed_json_is_400_and_wrong_shape_is_422() {
    let app = spawn_app().await;
    let malformed = app
        .request(Method::POST, "/api/approvals", Some(AGENT_TOKEN))
        .header("content-type", "application/json")
        .body("{\"session_id\": ")
        .send()
        .await
        .expect("send");
    expect_error(malformed, StatusCode::BAD_REQUEST, "invalid_json").await;

    let missing = app
        .create(&json!({"session_id": "s", "tool_input": {}}))
        .await;
    let body = expect_error(missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(
        body["message"].as_str().unwrap_or("").contains("tool_name"),
        "{body}"
    );

    let empty = app
        .create(&json!({"session_id": " ", "tool_name": "Bash", "tool_input": {}}))
        .await;
    let body = expect_error(empty, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("session_id"),
        "{body}"
    );

    let id = app.create_id(&new_approval()).await;
    let bad_decision = app
        .request(
            Method::POST,
            &format!("/api/approvals/{id}/decision"),
            Some(OPERATOR_TOKEN),
        )
        .json(&json!({"decision": "maybe"}))
        .send()
        .await
        .expect("send");
    expect_error(
        bad_decision,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
}

#[actix_web::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(&[("APPROVAL_GATE__SERVER__MAX_BODY_BYTES", "2048")]).await;
    let mut body = new_approval();
    body["tool_input"] = json!({"content": "x".repeat(4096)});
    let response = app.create(&body).await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[actix_web::test]
async fn timeouts_outside_the_bounds_are_422() {
    let app = spawn_app().await;
    let mut body = new_approval();
    body["timeout"] = json!("3h");
    let body = expect_error(
        app.create(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "timeout_out_of_range",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap_or("").contains("2h"),
        "{body}"
    );

    let mut body = new_approval();
    body["timeout"] = json!("soon");
    expect_error(
        app.create(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
}

#[actix_web::test]
async fn unknown_and_malformed_ids_are_404() {
    let app = spawn_app().await;
    let unknown = app.get("01ARZ3NDEKTSV4RRFFQ69G5FAV", None).await;
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let malformed = app.get("not-an-id", None).await;
    expect_error(malformed, StatusCode::NOT_FOUND, "not_found").await;
    let decide = app.decide("01ARZ3NDEKTSV4RRFFQ69G5FAV", "approve").await;
    expect_error(decide, StatusCode::NOT_FOUND, "not_found").await;
    let cancel = app.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    expect_error(cancel, StatusCode::NOT_FOUND, "not_found").await;
    let route = app
        .request(Method::GET, "/api/nothing-here", None)
        .send()
        .await
        .expect("send");
    expect_error(route, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn bad_query_parameters_are_400() {
    let app = spawn_app().await;
    for query in [
        "?status=done",
        "?limit=0",
        "?limit=100000",
        "?cursor=zzz",
        "?limit=abc",
    ] {
        expect_error(
            app.list(query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    let id = app.create_id(&new_approval()).await;
    expect_error(
        app.get(&id, Some("forever")).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

#[actix_web::test]
async fn too_many_waiters_is_429() {
    let app = spawn_app_with(&[("APPROVAL_GATE__SERVER__MAX_WAITERS", "2")]).await;
    let id = app.create_id(&new_approval()).await;
    let holders = futures_util::future::join_all((0..2).map(|_| app.get(&id, Some("30s"))));
    let probe = async {
        eventually(
            std::time::Duration::from_secs(10),
            "two waiters",
            || async {
                (metric(&app.metrics().await, "approval_gate_waiters") == Some(2.0)).then_some(())
            },
        )
        .await;
        let third = app.get(&id, Some("30s")).await;
        assert_eq!(third.headers()["retry-after"], "1");
        expect_error(third, StatusCode::TOO_MANY_REQUESTS, "too_many_waiters").await;
        assert_eq!(app.decide(&id, "approve").await.status(), StatusCode::OK);
    };
    let (held, ()) = futures_util::join!(holders, probe);
    for response in held {
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "approved");
    }
}
