//! Scratch self-test of tests/support (delete after verifying).
#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fake_telegram::{FakeTelegram, FakeUser, Fault, Outcome};
use support::smtp::SmtpServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SECS5: Duration = Duration::from_secs(5);

/// POST exactly like teloxide-core's `request_json`.
async fn post(
    client: &reqwest::Client,
    fake: &FakeTelegram,
    method: &str,
    body: Value,
) -> (u16, Value) {
    let resp = client
        .post(fake.method_url(method))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn keyboard(data: &[&str]) -> Value {
    let row: Vec<Value> = data
        .iter()
        .map(|d| json!({"text": d.to_uppercase(), "callback_data": d}))
        .collect();
    json!({ "inline_keyboard": [row] })
}

#[tokio::test]
async fn bot_api_shapes_and_semantics() {
    let fake = FakeTelegram::start();
    let c = reqwest::Client::new();

    let (s, me) = post(&c, &fake, "getMe", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(me["result"]["username"], "approval_gate_test_bot");
    assert_eq!(me["result"]["has_main_web_app"], false);

    let (s, sent) = post(&c, &fake, "sendMessage", json!({"chat_id": 77, "text": "<b>Approve?</b> a &amp; b", "parse_mode": "HTML", "reply_markup": keyboard(&["approve:1", "deny:1"])})).await;
    assert_eq!(s, 200, "{sent}");
    let m = &sent["result"];
    assert_eq!(m["message_id"], 1);
    assert_eq!(
        m["chat"],
        json!({"id": 77, "type": "private", "first_name": "Test User 77"})
    );
    assert_eq!(m["from"]["id"], 4242);
    assert_eq!(m["text"], "Approve? a & b");
    assert!(m["date"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(m["reply_markup"], keyboard(&["approve:1", "deny:1"]));
    let (_, second) = post(
        &c,
        &fake,
        "sendMessage",
        json!({"chat_id": 77, "text": "again"}),
    )
    .await;
    assert_eq!(second["result"]["message_id"], 2);
    let (_, group) = post(
        &c,
        &fake,
        "sendMessage",
        json!({"chat_id": -5, "text": "g"}),
    )
    .await;
    assert_eq!(group["result"]["chat"]["type"], "group");
    assert_eq!(group["result"]["message_id"], 1);
    assert_eq!(
        fake.messages()[0].callback_data(),
        vec!["approve:1", "deny:1"]
    );

    let edit =
        json!({"chat_id": 77, "message_id": 1, "text": "Approved by @x", "reply_markup": null});
    let (s, edited) = post(&c, &fake, "editMessageText", edit.clone()).await;
    assert_eq!(s, 200, "{edited}");
    assert!(edited["result"].get("reply_markup").is_none());
    assert!(edited["result"]["edit_date"].is_i64());
    let (s, same) = post(&c, &fake, "editMessageText", edit).await;
    assert_eq!((s, same["error_code"].clone()), (400, json!(400)));
    assert!(same["description"].as_str().unwrap().starts_with("Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"));
    let (s, missing) = post(
        &c,
        &fake,
        "editMessageText",
        json!({"chat_id": 77, "message_id": 99, "text": "x"}),
    )
    .await;
    assert_eq!(
        (s, missing["description"].as_str().unwrap()),
        (400, "Bad Request: message to edit not found")
    );
    let msg = fake.message(77, 1).unwrap();
    assert_eq!((msg.edits, msg.reply_markup.clone()), (1, None));
    let (s, _) = post(
        &c,
        &fake,
        "editMessageReplyMarkup",
        json!({"chat_id": 77, "message_id": 2, "reply_markup": keyboard(&["x"])}),
    )
    .await;
    assert_eq!(s, 200);

    let (s, long) = post(
        &c,
        &fake,
        "sendMessage",
        json!({"chat_id": 77, "text": "é".repeat(4097)}),
    )
    .await;
    assert_eq!(
        (s, long["description"].as_str().unwrap()),
        (400, "Bad Request: message is too long")
    );
    let (s, _) = post(&c, &fake, "sendMessage", json!({"chat_id": 77, "text": format!("<b>{}</b>", "x".repeat(4096)), "parse_mode": "HTML"})).await;
    assert_eq!(s, 200, "tags do not count towards the limit");
    let (s, html) = post(
        &c,
        &fake,
        "sendMessage",
        json!({"chat_id": 77, "text": "1 < 2", "parse_mode": "HTML"}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        html["description"]
            .as_str()
            .unwrap()
            .starts_with("Bad Request: can't parse entities: Unsupported start tag"),
        "{html}"
    );
    let (s, md) = post(
        &c,
        &fake,
        "sendMessage",
        json!({"chat_id": 77, "text": "v1.2", "parse_mode": "MarkdownV2"}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        md["description"]
            .as_str()
            .unwrap()
            .contains("Character '.' is reserved"),
        "{md}"
    );
    let (s, _) = post(&c, &fake, "sendMessage", json!({"chat_id": 77, "text": "*v1\\.2* [link](http://x/\\(y\\))", "parse_mode": "MarkdownV2"})).await;
    assert_eq!(s, 200);
    let (s, data) = post(
        &c,
        &fake,
        "sendMessage",
        json!({"chat_id": 77, "text": "k", "reply_markup": keyboard(&[&"d".repeat(65)])}),
    )
    .await;
    assert_eq!(
        (s, data["description"].as_str().unwrap()),
        (400, "Bad Request: BUTTON_DATA_INVALID")
    );

    let (s, nf) = post(&c, &fake, "sendDice", json!({})).await;
    assert_eq!(
        (s, nf),
        (
            404,
            json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"})
        )
    );
    let (s, del) = post(
        &c,
        &fake,
        "deleteMessage",
        json!({"chat_id": 77, "message_id": 2}),
    )
    .await;
    assert_eq!((s, del["result"].clone()), (200, json!(true)));
    let (s, wh) = post(&c, &fake, "getWebhookInfo", json!({})).await;
    assert_eq!((s, wh["result"]["url"].clone()), (200, json!("")));
}

#[tokio::test]
async fn long_poll_callbacks_and_conflicts() {
    let fake = Arc::new(FakeTelegram::start());
    let c = reqwest::Client::new();
    let (_, sent) = post(
        &c,
        &fake,
        "sendMessage",
        json!({"chat_id": 77, "text": "Approve?", "reply_markup": keyboard(&["approve:1"])}),
    )
    .await;
    let mid = sent["result"]["message_id"].as_i64().unwrap() as i32;

    let injector = Arc::clone(&fake);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        injector.inject_callback(
            &FakeUser::new(9001).with_username("alice"),
            77,
            mid,
            "approve:1",
        );
    });
    let t0 = Instant::now();
    let (s, ups) = post(
        &c,
        &fake,
        "getUpdates",
        json!({"offset": 0, "timeout": 10, "allowed_updates": ["message", "callback_query"]}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(t0.elapsed() >= Duration::from_millis(250) && t0.elapsed() < Duration::from_secs(3));
    let u = &ups["result"][0];
    let q = &u["callback_query"];
    assert_eq!(
        q["from"],
        json!({"id": 9001, "is_bot": false, "first_name": "Test User 9001", "language_code": "en", "username": "alice"})
    );
    assert_eq!(q["message"]["message_id"], mid);
    assert_eq!(q["message"]["chat"]["id"], 77);
    assert_eq!(q["message"]["reply_markup"], keyboard(&["approve:1"]));
    assert_eq!(q["data"], "approve:1");
    assert!(q["chat_instance"].is_string() && q["id"].is_string());
    let qid = q["id"].as_str().unwrap().to_owned();
    let next = u["update_id"].as_i64().unwrap() + 1;

    // Unconfirmed updates are redelivered; confirming via offset drops them.
    let (_, again) = post(&c, &fake, "getUpdates", json!({"offset": 0, "timeout": 0})).await;
    assert_eq!(again["result"].as_array().unwrap().len(), 1);
    let t0 = Instant::now();
    let (_, empty) = post(
        &c,
        &fake,
        "getUpdates",
        json!({"offset": next, "timeout": 1}),
    )
    .await;
    assert_eq!(empty["result"], json!([]));
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_eq!(fake.pending_updates(), 0);

    let (s, ok) = post(
        &c,
        &fake,
        "answerCallbackQuery",
        json!({"callback_query_id": qid, "text": "Approved"}),
    )
    .await;
    assert_eq!((s, ok["result"].clone()), (200, json!(true)));
    assert_eq!(
        fake.wait_for_answer(&qid, SECS5).await.text.as_deref(),
        Some("Approved")
    );
    let (s, _) = post(
        &c,
        &fake,
        "answerCallbackQuery",
        json!({"callback_query_id": qid}),
    )
    .await;
    assert_eq!(s, 400, "second answer is rejected");

    // Unknown message → minimal but valid message; text message injection.
    fake.inject_callback(&FakeUser::new(5), -100_123, 42, "x");
    fake.inject_text_message(&FakeUser::new(5), 5, "/start");
    let (_, two) = post(
        &c,
        &fake,
        "getUpdates",
        json!({"offset": next, "timeout": 0}),
    )
    .await;
    assert_eq!(
        two["result"][0]["callback_query"]["message"]["chat"]["type"],
        "group"
    );
    assert_eq!(two["result"][1]["message"]["text"], "/start");
    let last = two["result"][1]["update_id"].as_i64().unwrap();
    // allowed_updates is sticky: filtered kinds are never delivered.
    fake.inject_text_message(&FakeUser::new(5), 5, "hi");
    let (_, f) = post(
        &c,
        &fake,
        "getUpdates",
        json!({"offset": last + 1, "timeout": 0, "allowed_updates": ["callback_query"]}),
    )
    .await;
    assert_eq!(f["result"], json!([]));

    // A second concurrent poll terminates the first with 409.
    let (c1, f1) = (c.clone(), Arc::clone(&fake));
    let first = tokio::spawn(async move {
        post(
            &c1,
            &f1,
            "getUpdates",
            json!({"offset": last + 1, "timeout": 5}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = post(
        &c,
        &fake,
        "getUpdates",
        json!({"offset": last + 1, "timeout": 0}),
    );
    let (_, (s1, b1)) = tokio::join!(second, async { first.await.unwrap() });
    assert_eq!(s1, 409);
    assert_eq!(
        b1["description"],
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
    );
}

#[tokio::test]
async fn faults() {
    let fake = Arc::new(FakeTelegram::start());
    let c = reqwest::Client::new();
    let msg = || json!({"chat_id": 1, "text": "hi"});

    fake.push_fault(
        Some("sendMessage"),
        Fault::TooManyRequests { retry_after: 7 },
    );
    fake.push_fault(None, Fault::Status(502));
    let (s, b) = post(&c, &fake, "getUpdates", json!({"timeout": 0})).await;
    assert_eq!(s, 200, "untargeted faults skip getUpdates: {b}");
    let (s, b) = post(&c, &fake, "sendMessage", msg()).await;
    assert_eq!(
        (s, b),
        (
            429,
            json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 7", "parameters": {"retry_after": 7}})
        )
    );
    let (s, b) = post(&c, &fake, "getMe", json!({})).await;
    assert_eq!(
        (s, b),
        (
            502,
            json!({"ok": false, "error_code": 502, "description": "Bad Gateway"})
        )
    );

    fake.push_fault(Some("sendMessage"), Fault::DropConnection);
    let err = c
        .post(fake.method_url("sendMessage"))
        .json(&msg())
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(fake.messages().len(), 0);
    fake.push_fault(Some("sendMessage"), Fault::DropAfterProcessing);
    assert!(
        c.post(fake.method_url("sendMessage"))
            .json(&msg())
            .send()
            .await
            .is_err()
    );
    assert_eq!(
        fake.messages().len(),
        1,
        "processed although the response was lost"
    );
    let outcomes: Vec<Outcome> = fake
        .calls_to("sendMessage")
        .iter()
        .map(|c| c.outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Status(429), Outcome::Dropped, Outcome::Dropped]
    );

    fake.push_fault(
        Some("sendMessage"),
        Fault::Delay(Duration::from_millis(400)),
    );
    let t0 = Instant::now();
    assert_eq!(post(&c, &fake, "sendMessage", msg()).await.0, 200);
    assert!(t0.elapsed() >= Duration::from_millis(400));

    fake.set_down(Some(Fault::Status(503)), false);
    assert_eq!(post(&c, &fake, "sendMessage", msg()).await.0, 503);
    assert_eq!(post(&c, &fake, "getUpdates", json!({})).await.0, 200);
    fake.set_down(Some(Fault::Status(504)), true);
    assert_eq!(post(&c, &fake, "getUpdates", json!({})).await.0, 504);
    fake.clear_faults();
    assert_eq!(post(&c, &fake, "sendMessage", msg()).await.0, 200);

    fake.set_latency(Duration::from_millis(200));
    let t0 = Instant::now();
    post(&c, &fake, "getMe", json!({})).await;
    assert!(t0.elapsed() >= Duration::from_millis(200));
    fake.clear_faults();

    // Same seed, same request sequence → same faults.
    let run = |seed| async move {
        let f = FakeTelegram::start();
        f.set_random_faults(
            0.5,
            seed,
            vec![
                Fault::Status(500),
                Fault::TooManyRequests { retry_after: 1 },
            ],
        );
        let c = reqwest::Client::new();
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(post(&c, &f, "getMe", json!({})).await.0);
        }
        statuses
    };
    let (a, b) = (run(7).await, run(7).await);
    assert_eq!(a, b);
    assert!(
        a.contains(&200) && a.contains(&500) && a.contains(&429),
        "{a:?}"
    );

    // Waiting works from a runtime without a timer, and times out with a report.
    let f2 = Arc::clone(&fake);
    let calls = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(f2.wait_for_calls("getMe", 1, SECS5)).len()
    });
    assert!(calls.join().unwrap() >= 1);
    let f3 = Arc::clone(&fake);
    let waiter = tokio::spawn(async move {
        f3.wait_for_calls("editMessageText", 1, Duration::from_millis(200))
            .await
    });
    let panic = waiter.await.unwrap_err().into_panic();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(
        text.contains("editMessageText") && text.contains("sendMessage: "),
        "{text}"
    );

    // Dropping the handle stops the server.
    let addr = fake.url();
    drop(Arc::into_inner(fake).unwrap());
    assert!(c.get(format!("{addr}botX/getMe")).send().await.is_err());
}

async fn expect(conn: &mut BufReader<tokio::net::TcpStream>, code: &str) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            assert!(line.starts_with(code), "expected {code}, got {all:?}");
            return all;
        }
    }
}

async fn send(conn: &mut BufReader<tokio::net::TcpStream>, line: &str) {
    conn.get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
}

#[tokio::test]
async fn smtp_raw_conversation() {
    let smtp = SmtpServer::start();
    let stream = tokio::net::TcpStream::connect((smtp.host(), smtp.port()))
        .await
        .unwrap();
    let mut conn = BufReader::new(stream);
    expect(&mut conn, "220").await;
    send(&mut conn, "EHLO client.test").await;
    let ehlo = expect(&mut conn, "250").await;
    assert!(
        ehlo.contains("250-8BITMIME") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    send(&mut conn, "AUTH PLAIN AHVzZXIAcGFzcw==").await; // \0user\0pass
    expect(&mut conn, "235").await;
    send(&mut conn, "RCPT TO:<a@b>").await;
    expect(&mut conn, "503").await;
    send(&mut conn, "MAIL FROM:<gate@example.com> BODY=8BITMIME").await;
    expect(&mut conn, "250").await;
    send(&mut conn, "RCPT TO:<ops@example.com>").await;
    expect(&mut conn, "250").await;
    send(&mut conn, "RCPT TO:<boss@example.com>").await;
    expect(&mut conn, "250").await;
    send(&mut conn, "DATA").await;
    expect(&mut conn, "354").await;
    send(
        &mut conn,
        "Subject: Approval\r\n needed\r\nFrom: gate@example.com\r\n\r\nline 1\r\n..dot line\r\n.",
    )
    .await;
    expect(&mut conn, "250").await;
    send(&mut conn, "NOOP").await;
    expect(&mut conn, "250").await;
    send(&mut conn, "AUTH LOGIN").await;
    expect(&mut conn, "334 VXNlcm5hbWU6").await;
    send(&mut conn, "dXNlcjI=").await; // user2
    expect(&mut conn, "334 UGFzc3dvcmQ6").await;
    send(&mut conn, "cHc=").await; // pw
    expect(&mut conn, "235").await;
    send(&mut conn, "QUIT").await;
    expect(&mut conn, "221").await;

    let mails = smtp.wait_for_messages(1, SECS5).await;
    let m = &mails[0];
    assert_eq!(m.from, "gate@example.com");
    assert_eq!(m.to, vec!["ops@example.com", "boss@example.com"]);
    assert_eq!(m.auth, Some(("user".to_owned(), "pass".to_owned())));
    assert_eq!(m.helo, "client.test");
    assert_eq!(m.header("subject").as_deref(), Some("Approval needed"));
    assert_eq!(m.body(), "line 1\r\n.dot line\r\n");

    smtp.set_refuse(true);
    let mut conn = BufReader::new(
        tokio::net::TcpStream::connect((smtp.host(), smtp.port()))
            .await
            .unwrap(),
    );
    expect(&mut conn, "220").await;
    send(&mut conn, "HELO x").await;
    expect(&mut conn, "250").await;
    send(&mut conn, "MAIL FROM:<gate@example.com>").await;
    expect(&mut conn, "554").await;
    assert_eq!(smtp.connections(), 2);
}
