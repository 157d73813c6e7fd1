//! The LISTEN connection: wake-ups, and a resync after a reconnection.

use std::time::{Duration, Instant};

use super::super::testing::TestDb;

/// The next wake-up, at most `limit` away.
pub(super) async fn next_wake(
    wakes: &mut tokio::sync::mpsc::Receiver<super::super::listen::Wake>,
    limit: Duration,
) -> Option<super::super::listen::Wake> {
    tokio::time::timeout(limit, wakes.recv())
        .await
        .ok()
        .flatten()
}

async fn notify(client: &tokio_postgres::Client, payload: &str) {
    client
        .execute("SELECT pg_notify('ag_test_changes', $1)", &[&payload])
        .await
        .expect("notify");
}

#[actix_rt::test]
async fn a_killed_listen_connection_reconnects_and_asks_for_a_resync() {
    use super::super::listen::{self, Wake};
    let Some(db) = TestDb::create("a_killed_listen_connection").await else {
        return;
    };
    let (config, tls) = db.connect_config();
    let mut wakes = listen::spawn(config, tls, "ag_test_changes");
    let pool = db.pool();
    let client = pool.get().await.expect("a connection");
    let limit = Duration::from_secs(10);
    assert_eq!(
        next_wake(&mut wakes, limit).await,
        Some(Wake::Resync),
        "on connecting"
    );
    notify(&client, "01A").await;
    assert_eq!(
        next_wake(&mut wakes, limit).await,
        Some(Wake::Changed("01A".into()))
    );

    // Kill the listening session (a proxy restart, a failover, an idle-connection reaper).
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&listen::APPLICATION_NAME],
        )
        .await
        .expect("terminate the listener")
        .get(0);
    assert_eq!(killed, 1);
    // What is sent while it is down is lost to LISTEN; the listener must say so with a resync
    // once it is back, and then deliver wake-ups again.
    notify(&client, "01B-while-down").await;
    let mut saw_resync = false;
    let deadline = Instant::now() + limit;
    while !saw_resync && Instant::now() < deadline {
        match next_wake(&mut wakes, limit).await {
            Some(Wake::Resync) => saw_resync = true,
            Some(Wake::Changed(_)) => {} // it may have reconnected before the notify
            None => break,
        }
    }
    assert!(saw_resync, "a reconnection is announced with a resync");
    notify(&client, "01C").await;
    let mut delivered = false;
    while let Some(wake) = next_wake(&mut wakes, limit).await {
        if wake == Wake::Changed("01C".into()) {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "wake-ups flow again after the reconnection");
}
