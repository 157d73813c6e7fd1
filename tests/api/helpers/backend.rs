//! Which store the suite runs on: sled (the default) or PostgreSQL, chosen for the whole run by
//! `APPROVAL_GATE_TEST_BACKEND=postgres` (`scripts/test` runs the suite once per backend).
//!
//! On PostgreSQL every store folder a test uses gets a database of its own, named after the
//! folder, so a child process restarted on the same folder finds its data again. An in-process
//! app drops its database when it is dropped; databases of child-process tests are dropped when
//! the test binary exits (and, should it have been killed, by the next run's first test).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Databases of this suite are named `ag_dir_<hash of the store folder>`.
const PREFIX: &str = "ag_dir_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("APPROVAL_GATE_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sled,
    }
}

/// For tests of sled's own mechanics (its journal, its folder, its files): `true` means "not
/// on this backend", and the test returns after saying so.
pub fn sled_only(test: &str) -> bool {
    if backend() == Backend::Sled {
        return false;
    }
    eprintln!("{test}: sled only (its files and journal); not run on PostgreSQL");
    true
}

fn admin_url() -> String {
    match std::env::var("APPROVAL_GATE_TEST_POSTGRES") {
        Ok(url) if url != "skip" => url,
        _ => DEFAULT_URL.into(),
    }
}

pub fn database_name(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    format!("{PREFIX}{:016x}", hasher.finish())
}

/// A key=value connection string for `name` on the admin URL's server.
fn url_of(name: &str) -> String {
    super::postgres::database_url(&admin_url(), name)
}

/// Run SQL on the admin database, from any thread (a runtime of its own on a thread of its own).
fn admin(sql: Vec<String>) {
    let url = admin_url();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("PostgreSQL is unreachable at {url}: {e}"))?;
            tokio::spawn(connection);
            for statement in sql {
                if statement.starts_with("SELECT") {
                    let rows = client
                        .query(&statement, &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    for row in rows {
                        let name: String = row.get(0);
                        client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                } else if let Err(error) = client.batch_execute(&statement).await {
                    // CREATE of a database that exists (a restart on the same folder) is fine.
                    if error.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                        return Err(error.to_string());
                    }
                }
            }
            Ok::<(), String>(())
        })
    })
    .join()
    .expect("admin thread");
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

/// Drop every database of this suite (one test binary runs at a time).
fn sweep() {
    admin(vec![format!(
        "SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'"
    )])
}

extern "C" fn sweep_at_exit() {
    // Never panic across the C boundary: a failed sweep is redone by the next run.
    let _ = std::panic::catch_unwind(sweep);
}

/// Settings that put the store for `dir` on PostgreSQL (nothing on sled).
pub fn store_env(dir: &Path, env: &mut BTreeMap<String, String>) {
    if backend() != Backend::Postgres {
        return;
    }
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        sweep();
        // SAFETY: registers a plain `extern "C" fn()` to run at exit; it only starts a thread
        // of its own and waits for it.
        unsafe { libc::atexit(sweep_at_exit) };
    });
    let name = database_name(dir);
    admin(vec![format!("CREATE DATABASE {name}")]);
    env.insert("APPROVAL_GATE__STORE__BACKEND".into(), "postgres".into());
    env.insert("APPROVAL_GATE__STORE__POSTGRES__URL".into(), url_of(&name));
}

/// Drop the database of `dir` (an in-process app that is done).
pub fn drop_store(dir: &Path) {
    if backend() == Backend::Postgres {
        admin(vec![format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            database_name(dir)
        )]);
    }
}
