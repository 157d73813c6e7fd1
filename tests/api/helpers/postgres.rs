//! A PostgreSQL database of its own for a test, on the server the machine runs (the API suite's
//! twin of the actors crate's `store/postgres/testing.rs`; the same variable and rules).
//!
//! `APPROVAL_GATE_TEST_POSTGRES` names the server (default
//! `postgres://postgres@127.0.0.1:5432/test`). Unreachable: the test fails and says how to go
//! on; `APPROVAL_GATE_TEST_POSTGRES=skip` skips it, saying `NOT RUN` on stderr.

use tokio_postgres::NoTls;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// A key=value connection string for the new database.
    pub url: String,
}

impl PgDatabase {
    pub async fn create(test: &str) -> Option<PgDatabase> {
        let admin_url =
            std::env::var("APPROVAL_GATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
        if admin_url == "skip" {
            eprintln!("{test}: NOT RUN (APPROVAL_GATE_TEST_POSTGRES=skip)");
            return None;
        }
        let admin = connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "{test}: PostgreSQL is unreachable at {admin_url} ({e}). Start it, point \
                 APPROVAL_GATE_TEST_POSTGRES at one, or set APPROVAL_GATE_TEST_POSTGRES=skip"
            )
        });
        let name = format!("ag_api_{}", ulid::Ulid::new().to_string().to_lowercase());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = database_url(&admin_url, &name);
        Some(PgDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// The server's address (for a proxy in front of it).
    pub fn server_addr(&self) -> std::net::SocketAddr {
        let config: tokio_postgres::Config = self.url.parse().expect("the URL parses");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .expect("resolve the server")
            .next()
            .expect("an address")
    }

    /// The test database's connection string through a proxy on `port` (127.0.0.1).
    pub fn url_via(&self, port: u16) -> String {
        self.url
            .split(' ')
            .filter(|part| !part.starts_with("host=") && !part.starts_with("port="))
            .chain(
                ["host=127.0.0.1".into(), format!("port={port}")]
                    .iter()
                    .map(String::as_str),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A connection to the test database, for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

/// A key=value connection string for database `name` on the server `admin_url` names.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let config: tokio_postgres::Config = admin_url.parse().expect("the admin URL parses");
    let mut parts = vec![format!("dbname={name}")];
    if let Some(user) = config.get_user() {
        parts.push(format!("user={user}"));
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

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let admin = connect(&admin_url).await.ok()?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// `n` instances (child processes) sharing `db`, each on a folder of its own under `dir`, named
/// `instance-<i>`, started with `serve <args>` and `extra` settings.
pub fn pg_instances(
    dir: &std::path::Path,
    db: &PgDatabase,
    n: usize,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Vec<super::ChildApp> {
    (0..n)
        .map(|i| {
            let folder = dir.join(format!("instance-{i}"));
            std::fs::create_dir_all(&folder).expect("instance folder");
            let name = format!("instance-{i}");
            let mut overrides: Vec<(&str, &str)> = vec![
                ("APPROVAL_GATE__STORE__BACKEND", "postgres"),
                ("APPROVAL_GATE__STORE__POSTGRES__URL", db.url.as_str()),
                ("APPROVAL_GATE__STORE__POSTGRES__INSTANCE", name.as_str()),
            ];
            overrides.extend_from_slice(extra);
            super::spawn_binary_args(&folder, args, &overrides)
        })
        .collect()
}
