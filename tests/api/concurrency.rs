//! Races: many deciders on one approval have exactly one winner; concurrent idempotent creates
//! produce one approval.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

#[actix_web::test]
async fn one_hundred_concurrent_decisions_have_exactly_one_winner() {
    let app = spawn_app().await;
    let id = app.create_id(&new_approval()).await;

    let decisions =
        (0..100).map(|i| app.decide(&id, if i % 2 == 0 { "approve" } else { "reject" }));
    let responses = futures_util::future::join_all(decisions).await;

    let mut winners = Vec::new();
    let mut conflicts = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => winners.push(response.json::<Value>().await.expect("json")),
            StatusCode::CONFLICT => {
                conflicts += 1;
                let body: Value = response.json().await.expect("json");
                assert_eq!(body["error"], "already_decided");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one decision wins");
    assert_eq!(conflicts, 99);
    let final_state: Value = app.get(&id, None).await.json().await.expect("json");
    assert_eq!(final_state["status"], winners[0]["status"]);
    assert_eq!(final_state["decided_at"], winners[0]["decided_at"]);
}

#[actix_web::test]
async fn concurrent_creates_with_one_idempotency_key_make_one_approval() {
    let app = spawn_app().await;
    let mut body = new_approval();
    body["idempotency_key"] = json!("same-key");
    let responses = futures_util::future::join_all((0..20).map(|_| app.create(&body))).await;
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for response in responses {
        if response.status() == StatusCode::CREATED {
            created += 1;
        } else {
            assert_eq!(response.status(), StatusCode::OK);
        }
        let approval: Value = response.json().await.expect("json");
        ids.insert(approval["id"].as_str().expect("id").to_string());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
}

#[actix_web::test]
async fn a_decision_racing_a_cancel_has_one_outcome() {
    let app = spawn_app().await;
    for _ in 0..10 {
        let id = app.create_id(&new_approval()).await;
        let (decided, cancelled) = futures_util::join!(app.decide(&id, "approve"), app.cancel(&id));
        let statuses = [decided.status(), cancelled.status()];
        assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
        assert!(statuses.contains(&StatusCode::CONFLICT), "{statuses:?}");
        let current: Value = app.get(&id, None).await.json().await.expect("json");
        let expected = if decided.status() == StatusCode::OK {
            "approved"
        } else {
            "cancelled"
        };
        assert_eq!(current["status"], expected);
    }
}
