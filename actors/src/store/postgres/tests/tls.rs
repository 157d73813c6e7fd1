//! TLS to the database against the machine's PostgreSQL, with its own certificate as the CA
//! (Debian's server runs with `ssl = on` and a self-signed certificate for `localhost`).

use std::path::PathBuf;

use super::super::testing::TestDb;
use super::super::{PgError, PgSettings, PgTls, TlsMode, pool};

/// The server's certificate file, if it runs with TLS and the file is readable here.
async fn server_certificate(db: &TestDb) -> Option<PathBuf> {
    let client = db.pool().get().await.expect("a plain connection");
    let ssl: String = client.query_one("SHOW ssl", &[]).await.ok()?.get(0);
    let file: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .ok()?
        .get(0);
    let path = PathBuf::from(file);
    (ssl == "on" && std::fs::read(&path).is_ok()).then_some(path)
}

fn settings(db: &TestDb, host: &str, mode: TlsMode, ca_file: Option<PathBuf>) -> PgSettings {
    let mut settings = db.settings();
    settings.url = settings
        .url
        .replace("host=127.0.0.1", &format!("host={host}"));
    settings.tls = PgTls { mode, ca_file };
    settings
}

/// Whether a connection made with `settings` is encrypted; `Err` if none could be made.
async fn encrypted(settings: &PgSettings) -> Result<bool, String> {
    let pool = pool(settings).map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[actix_rt::test]
async fn each_tls_mode_means_what_libpq_means() {
    let Some(db) = TestDb::create("each_tls_mode_means_what_libpq_means").await else {
        return;
    };
    let Some(ca) = server_certificate(&db).await else {
        eprintln!("each_tls_mode_means_what_libpq_means: NOT RUN (the server has no TLS)");
        return;
    };
    let check = |host: &str, mode, ca: Option<PathBuf>| settings(&db, host, mode, ca);

    assert_eq!(
        encrypted(&check("127.0.0.1", TlsMode::Disable, None)).await,
        Ok(false)
    );
    // require: encrypted, the certificate taken as it comes.
    assert_eq!(
        encrypted(&check("127.0.0.1", TlsMode::Require, None)).await,
        Ok(true)
    );
    // require with a CA (verify-ca): the chain is checked, the name is not.
    assert_eq!(
        encrypted(&check("127.0.0.1", TlsMode::Require, Some(ca.clone()))).await,
        Ok(true)
    );
    // verify-full: the chain and the name.
    assert_eq!(
        encrypted(&check("localhost", TlsMode::VerifyFull, Some(ca.clone()))).await,
        Ok(true)
    );
    let wrong_name = encrypted(&check("127.0.0.1", TlsMode::VerifyFull, Some(ca.clone()))).await;
    assert!(
        wrong_name
            .as_ref()
            .is_err_and(|e| e.contains("NotValidForName")),
        "a certificate for localhost is refused for 127.0.0.1: {wrong_name:?}"
    );
    let unknown_issuer = encrypted(&check("localhost", TlsMode::VerifyFull, None)).await;
    assert!(
        unknown_issuer
            .as_ref()
            .is_err_and(|e| e.contains("UnknownIssuer")),
        "a self-signed certificate is refused against the public roots: {unknown_issuer:?}"
    );
}

#[actix_rt::test]
async fn a_missing_or_empty_ca_file_is_named_in_the_error() {
    let Some(db) = TestDb::create("a_missing_or_empty_ca_file").await else {
        return;
    };
    let missing = PathBuf::from("/nonexistent/ca.pem");
    let error = pool(&settings(
        &db,
        "localhost",
        TlsMode::VerifyFull,
        Some(missing),
    ))
    .expect_err("a missing CA file is refused");
    assert!(matches!(error, PgError::Tls(_)), "{error}");
    assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    let dir = tempfile::tempdir().expect("a temp dir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let error = pool(&settings(&db, "localhost", TlsMode::Require, Some(empty)))
        .expect_err("a CA file without certificates is refused");
    assert!(
        error.to_string().contains("holds no certificate"),
        "{error}"
    );
}
