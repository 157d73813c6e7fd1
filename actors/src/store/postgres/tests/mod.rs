//! The PostgreSQL backend's parts against a real PostgreSQL (see `testing`): a database of its
//! own per test, several pools on it standing for several instances.

mod approvals;
mod creates;
mod import;
mod leader;
mod listen;
mod migrations;
mod outbox;
mod tls;

use super::connect_and_migrate;
use super::testing::TestDb;

/// A pool on `db` with the schema migrated.
async fn migrated(db: &TestDb) -> deadpool_postgres::Pool {
    let pool = db.pool();
    connect_and_migrate(&pool).await.expect("migrate");
    pool
}
