//! The Telegram poller's lease: one holder, epochs, fencing, hand-over.

use std::time::{Duration, Instant};

use super::super::leader::{self, Lease};
use super::super::testing::TestDb;
use super::migrated;

/// Waits until `holder` gets the lease (it lapses on the database's clock), at most `limit`.
async fn acquire_within(
    client: &tokio_postgres::Client,
    holder: &str,
    lease: Duration,
    limit: Duration,
) -> Option<Lease> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(granted) = leader::acquire(client, holder, lease)
            .await
            .expect("acquire")
        {
            return Some(granted);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn one_holder_at_a_time_and_a_lapsed_holder_is_fenced() {
    let Some(db) = TestDb::create("one_holder_at_a_time").await else {
        return;
    };
    let pool = migrated(&db).await;
    let client = pool.get().await.expect("a connection");
    let short = Duration::from_millis(300);

    let a = leader::acquire(&**client, "a", short)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    assert_eq!(a.epoch, 1);
    assert!(
        leader::acquire(&**client, "b", short)
            .await
            .expect("acquire")
            .is_none(),
        "a live lease is not granted to another"
    );
    let renewed = leader::acquire(&**client, "a", short)
        .await
        .expect("renew")
        .expect("the holder renews");
    assert_eq!(renewed.epoch, a.epoch, "a renewal keeps the epoch");
    assert!(
        leader::advance_offset(&**client, &renewed, 41)
            .await
            .unwrap()
    );

    // A stops renewing (paused, or its host died); B takes over once the lease lapses.
    let b = acquire_within(
        &client,
        "b",
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .await
    .expect("b takes the lapsed lease");
    assert_eq!(b.epoch, a.epoch + 1);
    // A wakes up and tries to record what it polled meanwhile: fenced, and it cannot renew.
    assert!(
        !leader::advance_offset(&**client, &renewed, 99)
            .await
            .unwrap()
    );
    assert!(
        leader::acquire(&**client, "a", short)
            .await
            .unwrap()
            .is_none(),
        "a cannot take back a live lease"
    );
    let state = leader::state(&**client).await.unwrap().expect("state");
    assert_eq!(
        state.update_offset, 41,
        "the fenced write left the offset alone"
    );
}

#[actix_rt::test]
async fn the_offset_never_moves_backwards_and_a_release_hands_over_at_once() {
    let Some(db) = TestDb::create("the_offset_never_moves_backwards").await else {
        return;
    };
    let pool = migrated(&db).await;
    let client = pool.get().await.expect("a connection");
    let long = Duration::from_secs(60);
    let a = leader::acquire(&**client, "a", long)
        .await
        .unwrap()
        .unwrap();
    assert!(leader::advance_offset(&**client, &a, 10).await.unwrap());
    assert!(leader::advance_offset(&**client, &a, 7).await.unwrap());
    let state = leader::state(&**client).await.unwrap().unwrap();
    assert_eq!(state.update_offset, 10);
    assert!(
        leader::acquire(&**client, "b", long)
            .await
            .unwrap()
            .is_none()
    );
    leader::release(&**client, &a).await.unwrap();
    let b = leader::acquire(&**client, "b", long)
        .await
        .unwrap()
        .expect("a released lease is free at once");
    assert_eq!(b.epoch, a.epoch + 1);
    assert_eq!(
        leader::state(&**client)
            .await
            .unwrap()
            .unwrap()
            .update_offset,
        10,
        "the offset is kept across holders"
    );
}

#[actix_rt::test]
async fn of_many_contenders_at_once_exactly_one_gets_the_lease() {
    let Some(db) = TestDb::create("of_many_contenders").await else {
        return;
    };
    let pool = migrated(&db).await;
    for round in 0..5 {
        let contenders: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let client = pool.get().await.expect("a connection");
                    leader::acquire(&**client, &format!("r{round}-{i}"), Duration::from_secs(60))
                        .await
                        .expect("acquire")
                })
            })
            .collect();
        let mut winners = Vec::new();
        for contender in contenders {
            if let Some(lease) = contender.await.expect("join") {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        leader::release(&**pool.get().await.unwrap(), &winners[0])
            .await
            .unwrap();
    }
}
