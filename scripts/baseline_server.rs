//! The honest durable limit of this machine, for `scripts/bench` to compare the service with in
//! the same run: the same actix-web setup (workers = cores, TCP_NODELAY, the same allocator)
//! answering `POST /api/approvals` with a bare sled insert behind a group commit of `flush()` +
//! `fdatasync` on a dedicated thread, and nothing else (no validation, state machine, indexes,
//! queues or notifications).
//!
//!   baseline-server PORT STORE_DIR

use std::fs::File;
use std::sync::mpsc;

use actix_web::{App, HttpResponse, HttpServer, web};
use tokio::sync::oneshot;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Ticket = oneshot::Sender<bool>;

struct Store {
    tree: sled::Tree,
    tickets: mpsc::Sender<Ticket>,
}

/// The group commit: every ticket queued so far is answered by one flush + fdatasync.
fn flusher(db: sled::Db, file: File, rx: mpsc::Receiver<Ticket>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let ok = db.flush().is_ok() && file.sync_data().is_ok();
        for ticket in batch {
            let _ = ticket.send(ok);
        }
    }
}

async fn create(store: web::Data<Store>, body: web::Bytes) -> HttpResponse {
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return HttpResponse::BadRequest().finish();
    }
    let id = ulid::Ulid::new();
    if store.tree.insert(id.to_bytes(), body.as_ref()).is_err() {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let (tx, rx) = oneshot::channel();
    if store.tickets.send(tx).is_err() || !rx.await.unwrap_or(false) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    HttpResponse::Created().json(serde_json::json!({ "id": id.to_string(), "status": "pending" }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: baseline-server PORT STORE_DIR");
        std::process::exit(2);
    };
    let port: u16 = port
        .parse()
        .map_err(|_| std::io::Error::other("PORT must be a number"))?;
    let db = sled::Config::new()
        .path(&dir)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(std::io::Error::other)?;
    let tree = db.open_tree("approvals").map_err(std::io::Error::other)?;
    let file = File::open(std::path::Path::new(&dir).join("db"))?;
    let (tickets, rx) = mpsc::channel();
    std::thread::spawn(move || flusher(db, file, rx));
    let store = web::Data::new(Store { tree, tickets });
    HttpServer::new(move || {
        App::new()
            .app_data(store.clone())
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
