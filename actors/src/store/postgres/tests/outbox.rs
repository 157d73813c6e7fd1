//! The outboxes: claims under leases, take-over after a death, retries and dead letters.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::super::outbox;
use super::super::testing::TestDb;
use super::migrated;

const TELEGRAM: i16 = 0;
const EMAIL: i16 = 2;

async fn fill(client: &tokio_postgres::Client, channel: i16, n: usize) {
    for i in 0..n {
        client
            .execute(
                "INSERT INTO outbox (channel, entry) VALUES ($1, $2)",
                &[&channel, &format!("entry-{i}").into_bytes()],
            )
            .await
            .expect("queue an entry");
    }
}

#[actix_rt::test]
async fn concurrent_claimants_never_take_the_same_entry() {
    let Some(db) = TestDb::create("concurrent_claimants_never_take_the_same_entry").await else {
        return;
    };
    let pool = migrated(&db).await;
    fill(&pool.get().await.unwrap(), TELEGRAM, 200).await;
    fill(&pool.get().await.unwrap(), EMAIL, 5).await;
    let claimants: Vec<_> = (0..4)
        .map(|i| {
            let pool = db.pool();
            tokio::spawn(async move {
                let client = pool.get().await.expect("a connection");
                let holder = format!("instance-{i}");
                let mut mine = Vec::new();
                loop {
                    let batch =
                        outbox::claim(&**client, TELEGRAM, &holder, Duration::from_secs(60), 9)
                            .await
                            .expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    for claimed in batch {
                        assert!(
                            outbox::complete(&**client, claimed.seq, &holder)
                                .await
                                .unwrap()
                        );
                        mine.push(claimed.seq);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimant in claimants {
        all.extend(claimant.await.expect("join"));
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 200, "every entry delivered");
    assert_eq!(distinct.len(), 200, "none delivered twice");
    let left: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM outbox WHERE channel = $1", &[&EMAIL])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 5, "another channel's entries are not touched");
}

#[actix_rt::test]
async fn entries_of_a_claimant_that_died_are_taken_over_after_its_lease() {
    let Some(db) = TestDb::create("entries_of_a_claimant_that_died").await else {
        return;
    };
    let pool = migrated(&db).await;
    let client = pool.get().await.expect("a connection");
    fill(&client, TELEGRAM, 3).await;
    let dead = outbox::claim(&**client, TELEGRAM, "a", Duration::from_millis(300), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 3);
    assert!(
        outbox::claim(&**client, TELEGRAM, "b", Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty(),
        "a live lease is respected"
    );
    // "a" dies without completing anything; "b" takes the entries once the lease lapses.
    let deadline = Instant::now() + Duration::from_secs(5);
    let taken = loop {
        let batch = outbox::claim(&**client, TELEGRAM, "b", Duration::from_secs(60), 10)
            .await
            .unwrap();
        if !batch.is_empty() || Instant::now() > deadline {
            break batch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        taken.iter().map(|c| c.seq).collect::<Vec<_>>(),
        dead.iter().map(|c| c.seq).collect::<Vec<_>>()
    );
    assert!(taken.iter().all(|c| c.attempts == 2), "{taken:?}");
    // "a" comes back and reports a delivery: its lease is gone, the entry is b's.
    assert!(!outbox::complete(&**client, dead[0].seq, "a").await.unwrap());
    assert!(
        outbox::complete(&**client, taken[0].seq, "b")
            .await
            .unwrap()
    );
}

#[actix_rt::test]
async fn a_retry_waits_its_delay_and_dead_letters_requeue_as_new_entries() {
    let Some(db) = TestDb::create("a_retry_waits_its_delay").await else {
        return;
    };
    let pool = migrated(&db).await;
    let client = pool.get().await.expect("a connection");
    fill(&client, EMAIL, 2).await;
    let batch = outbox::claim(&**client, EMAIL, "a", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert!(
        outbox::retry_later(&**client, batch[0].seq, "a", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        outbox::dead_letter(&**client, batch[1].seq, "a", "550 mailbox unavailable")
            .await
            .unwrap()
    );
    assert!(
        outbox::claim(&**client, EMAIL, "b", Duration::from_secs(60), 10)
            .await
            .unwrap()
            .is_empty(),
        "the retry waits its delay; the dead letter is out of the outbox"
    );
    let dead = outbox::dead_letters(&**client, EMAIL).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "550 mailbox unavailable");
    assert_eq!(outbox::requeue_channel(&**client, EMAIL).await.unwrap(), 1);
    assert!(
        outbox::dead_letters(&**client, EMAIL)
            .await
            .unwrap()
            .is_empty()
    );
    let again = outbox::claim(&**client, EMAIL, "b", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entry, dead[0].entry);
    assert_eq!(
        again[0].attempts, 1,
        "a requeued letter starts its attempts afresh"
    );
}
