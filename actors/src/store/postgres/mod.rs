//! The PostgreSQL backend: connections, the schema ([`migrations`]) and the SQL of every
//! table; [`backend`] implements the store's contracts on them.
//!
//! It must not know about sled, and nothing outside `store` may know about it: the registry and
//! the notifiers reach it through the store abstraction.
//!
//! The client is tokio-postgres with deadpool-postgres for the pool. Chosen over sqlx because
//! tokio-postgres pipelines the statements one connection is given concurrently (a create's
//! insert, its audit event and its outbox rows need not wait a round trip each), its
//! statements are plain SQL checked by the tests against a real server rather than at compile
//! time against a database the build would need, and its dependency tree is small. deadpool is
//! the pool the tokio-postgres ecosystem uses: a plain async pool with a wait timeout, recycling
//! that checks a connection is still open, and no background tasks of its own.

pub mod approvals;
pub mod backend;
pub mod creates;
pub mod export;
pub mod import;
pub mod leader;
pub mod listen;
pub mod migrations;
pub mod outbox;
pub mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use tls::{PgTls, TlsMode};

/// JSON text as PostgreSQL's `jsonb` can hold it. jsonb has no NUL character and refuses
/// `\u0000`, which is valid JSON an agent may send: in these queryable copies (a tool input,
/// history, a grant) a NUL reads as U+FFFD. What the service reads back as the approval (its
/// `record`) and the outbox entries are bytes and keep it exactly.
pub fn jsonb_text(json: &str) -> std::borrow::Cow<'_, str> {
    if json.contains("\\u0000") {
        std::borrow::Cow::Owned(json.replace("\\u0000", "\\ufffd"))
    } else {
        std::borrow::Cow::Borrowed(json)
    }
}

/// A parsed connection string (validation parses `store.postgres.url` with it).
pub type ConnectionString = tokio_postgres::Config;

/// What it takes to reach the database.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// A libpq-style URL or key=value string (a secret: never logged).
    pub url: String,
    /// Connections this instance keeps at most.
    pub pool_size: usize,
    /// Longest a statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// Longest a caller waits for a free connection.
    pub pool_wait: Duration,
    /// TLS to the database (`tls.rs`). It decides, whatever `sslmode` the URL names.
    pub tls: PgTls,
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL did not parse. Its text is not repeated here: it may hold a password.
    #[error("store.postgres.url is not a valid PostgreSQL connection string: {0}")]
    BadUrl(String),
    #[error("cannot build the PostgreSQL pool: {0}")]
    Pool(String),
    #[error("no PostgreSQL connection: {0}")]
    Connect(String),
    #[error("{0}")]
    Migration(#[from] migrations::MigrationError),
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
}

/// The parsed connection settings and the TLS connector every connection uses (the pool's and
/// the LISTEN connection's).
pub fn connect_config(
    settings: &PgSettings,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), PgError> {
    let mut config: tokio_postgres::Config = settings
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::BadUrl(e.to_string()))?;
    config.application_name("approval-gate");
    // Milliseconds, as PostgreSQL takes a bare number for this setting.
    config.options(format!(
        "-c statement_timeout={}",
        settings.statement_timeout.as_millis()
    ));
    let connector = match tls::client_config(&settings.tls)? {
        Some(client) => {
            config.ssl_mode(SslMode::Require);
            MakeRustlsConnect::new(client)
        }
        None => {
            // Never used (TLS is off), but the connector's type is the same either way.
            config.ssl_mode(SslMode::Disable);
            MakeRustlsConnect::new(
                tls::client_config(&PgTls {
                    mode: TlsMode::VerifyFull,
                    ca_file: None,
                })?
                .ok_or_else(|| PgError::Pool("no TLS configuration".into()))?,
            )
        }
    };
    Ok((config, connector))
}

/// A pool of connections to the database, each with the statement timeout set.
pub fn pool(settings: &PgSettings) -> Result<Pool, PgError> {
    pool_with(settings, settings.pool_size, "")
}

/// A pool of `size` connections whose sessions also get `options` (e.g.
/// `-c synchronous_commit=off`).
pub fn pool_with(settings: &PgSettings, size: usize, options: &str) -> Result<Pool, PgError> {
    let settings = &PgSettings {
        pool_size: size,
        ..settings.clone()
    };
    let (mut config, connector) = connect_config(settings)?;
    if !options.is_empty() {
        let mut all = config.get_options().unwrap_or_default().to_string();
        all.push(' ');
        all.push_str(options);
        config.options(all);
    }
    let manager = Manager::from_config(
        config,
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(settings.pool_wait))
        .create_timeout(Some(settings.pool_wait))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// Takes a connection from the pool and brings the schema up to date (see [`migrations`]).
pub async fn connect_and_migrate(pool: &Pool) -> Result<migrations::Migrated, PgError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| PgError::Connect(e.to_string()))?;
    Ok(migrations::migrate(&mut client).await?)
}

/// One connection with the schema brought up to date, for one-shot commands (a restore into
/// PostgreSQL, a backup out of it).
pub async fn connect_once(
    settings: &PgSettings,
) -> Result<(deadpool_postgres::Object, migrations::Migrated), PgError> {
    let pool = pool(settings)?;
    let migrated = connect_and_migrate(&pool).await?;
    let client = pool
        .get()
        .await
        .map_err(|e| PgError::Connect(e.to_string()))?;
    Ok((client, migrated))
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
