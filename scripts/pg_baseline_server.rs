//! The honest durable limit of PostgreSQL on this machine, for `scripts/bench-cluster` to
//! compare an approval-gate instance with in the same run: the same actix-web setup (workers =
//! cores, TCP_NODELAY, the same allocator) answering `POST /api/approvals` with one prepared
//! INSERT per request through the same client crates the service uses (tokio-postgres,
//! deadpool-postgres), `synchronous_commit = on` (the server's default), and nothing else.
//!
//!   pg-baseline-server PORT DATABASE_URL POOL_SIZE

use actix_web::{App, HttpResponse, HttpServer, web};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn create(pool: web::Data<Pool>, body: web::Bytes) -> HttpResponse {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let id = ulid::Ulid::new();
    let Ok(client) = pool.get().await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    let Ok(statement) = client
        .prepare_cached("INSERT INTO baseline (id, body) VALUES ($1, ($2::text)::jsonb)")
        .await
    else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    let text = value.to_string();
    if client
        .execute(&statement, &[&id.to_bytes().as_slice(), &text])
        .await
        .is_err()
    {
        return HttpResponse::ServiceUnavailable().finish();
    }
    HttpResponse::Created().json(serde_json::json!({ "id": id.to_string(), "status": "pending" }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(url), Some(size)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: pg-baseline-server PORT DATABASE_URL POOL_SIZE");
        std::process::exit(2);
    };
    let port: u16 = port.parse().map_err(|_| std::io::Error::other("PORT"))?;
    let size: usize = size
        .parse()
        .map_err(|_| std::io::Error::other("POOL_SIZE"))?;
    let config: tokio_postgres::Config = url.parse().map_err(std::io::Error::other)?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(std::io::Error::other)?;
    pool.get()
        .await
        .map_err(std::io::Error::other)?
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS baseline (id bytea PRIMARY KEY, body jsonb NOT NULL)",
        )
        .await
        .map_err(std::io::Error::other)?;
    let pool = web::Data::new(pool);
    HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .route("/api/approvals", web::post().to(create))
    })
    .on_connect(|connection, _| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
