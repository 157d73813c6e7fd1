//! The schema's migrations: once, together, and refused when newer.

use super::super::migrations::{self, MigrationError};
use super::super::testing::TestDb;
use super::super::{PgError, connect_and_migrate};
use super::migrated;

#[actix_rt::test]
async fn a_fresh_database_is_migrated_once_and_then_left_alone() {
    let Some(db) = TestDb::create("a_fresh_database_is_migrated_once").await else {
        return;
    };
    let pool = db.pool();
    let first = connect_and_migrate(&pool).await.expect("first start");
    assert_eq!((first.from, first.to), (0, migrations::latest()));
    let second = connect_and_migrate(&pool).await.expect("second start");
    assert_eq!(
        (second.from, second.to),
        (migrations::latest(), migrations::latest())
    );
    let client = pool.get().await.expect("a connection");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = 'public' AND table_name IN
             ('approvals', 'approval_events', 'outbox', 'dead_letters', 'telegram_messages',
              'grants', 'telegram_leader', 'meta')",
            &[],
        )
        .await
        .expect("count tables")
        .get(0);
    assert_eq!(tables, 8);
}

#[actix_rt::test]
async fn instances_starting_together_apply_each_migration_exactly_once() {
    let Some(db) = TestDb::create("instances_starting_together").await else {
        return;
    };
    // Eight "instances", each with its own pool, all starting at once on an empty database.
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let pool = db.pool();
            tokio::spawn(async move { connect_and_migrate(&pool).await })
        })
        .collect();
    let mut migrated_from_zero = 0;
    for start in starts {
        let done = start.await.expect("join").expect("every instance starts");
        assert_eq!(done.to, migrations::latest());
        migrated_from_zero += usize::from(done.from == 0);
    }
    assert_eq!(migrated_from_zero, 1, "exactly one instance migrated");
    let client = db.pool().get().await.expect("a connection");
    let rows: Vec<(i32, i64)> = client
        .query(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version",
            &[],
        )
        .await
        .expect("read schema_migrations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(i32, i64)> = migrations::MIGRATIONS
        .iter()
        .map(|m| (m.version, 1))
        .collect();
    assert_eq!(rows, expected);
}

#[actix_rt::test]
async fn a_binary_older_than_the_schema_refuses_to_start() {
    let Some(db) = TestDb::create("a_binary_older_than_the_schema").await else {
        return;
    };
    let pool = migrated(&db).await;
    let newer = migrations::latest() + 1;
    pool.get()
        .await
        .expect("a connection")
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'from the future')",
            &[&newer],
        )
        .await
        .expect("pretend a newer binary migrated");
    let error = connect_and_migrate(&pool)
        .await
        .expect_err("an older binary must refuse");
    match &error {
        PgError::Migration(MigrationError::SchemaTooNew { found, supported }) => {
            assert_eq!((*found, *supported), (newer, migrations::latest()));
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
    assert!(
        error.to_string().contains("newer than this binary"),
        "{error}"
    );
}
