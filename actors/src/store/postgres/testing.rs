//! A database of its own for each test, on the PostgreSQL the machine runs.
//!
//! `APPROVAL_GATE_TEST_POSTGRES` names the server (default
//! `postgres://postgres@127.0.0.1:5432/test`, what this project's machines and CI run). If it
//! cannot be reached the test fails and says how to proceed; `APPROVAL_GATE_TEST_POSTGRES=skip`
//! runs the suite without the PostgreSQL tests, each saying on stderr that it did not run.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::NoTls;

use super::{PgSettings, pool};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A freshly created database, dropped when this is dropped.
pub struct TestDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// `None` only under `APPROVAL_GATE_TEST_POSTGRES=skip`.
    pub async fn create(test: &str) -> Option<TestDb> {
        let admin_url =
            std::env::var("APPROVAL_GATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
        if admin_url == "skip" {
            eprintln!("{test}: NOT RUN (APPROVAL_GATE_TEST_POSTGRES=skip)");
            return None;
        }
        let (admin, connection) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{test}: PostgreSQL is unreachable at {admin_url} ({e}). Start it, point \
                     APPROVAL_GATE_TEST_POSTGRES at one, or set APPROVAL_GATE_TEST_POSTGRES=skip \
                     to run the other tests without the PostgreSQL ones"
                )
            });
        let driver = tokio::spawn(connection);
        let name = format!("ag_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        drop(admin);
        let _ = driver.await;
        let mut url: tokio_postgres::Config = admin_url.parse().expect("the admin URL parses");
        url.dbname(&name);
        Some(TestDb {
            url: config_to_url(&url, &name),
            admin_url,
            name,
        })
    }

    pub fn settings(&self) -> PgSettings {
        PgSettings {
            url: self.url.clone(),
            pool_size: 8,
            statement_timeout: Duration::from_secs(10),
            pool_wait: Duration::from_secs(10),
            tls: super::PgTls::default(),
        }
    }

    /// The connection settings and connector, as the LISTEN connection takes them.
    pub fn connect_config(
        &self,
    ) -> (
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    ) {
        super::connect_config(&self.settings()).expect("the test settings are valid")
    }

    pub fn pool(&self) -> Pool {
        pool(&self.settings()).expect("a pool for the test database")
    }
}

/// The admin URL with the test database's name in place of its own (key=value form, which
/// tokio-postgres parses like a URL).
fn config_to_url(config: &tokio_postgres::Config, dbname: &str) -> String {
    let mut parts = vec![format!("dbname={dbname}")];
    if let Some(user) = config.get_user() {
        parts.push(format!("user={user}"));
    }
    if let Some(password) = config.get_password() {
        parts.push(format!("password={}", String::from_utf8_lossy(password)));
    }
    for host in config.get_hosts() {
        if let tokio_postgres::config::Host::Tcp(host) = host {
            parts.push(format!("host={host}"));
        }
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    parts.join(" ")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any runtime it could borrow: a small one on its own thread.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (admin, connection) = tokio_postgres::connect(&admin_url, NoTls).await.ok()?;
                tokio::spawn(connection);
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}
