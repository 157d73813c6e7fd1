//! The operators' web console at `/console/`: its pages and assets (embedded in the binary),
//! sign-in and sign-out, and the live stream of pending approvals (`events`).
//!
//! The console is a small script over the public API: it reads and decides through the same
//! `/api/...` routes as the CLI, authenticated by its session cookie (`auth.rs`), so there is
//! no second implementation of any rule here. What this module owns: the session cookie, the
//! pages' security headers (a strict Content-Security-Policy: no inline script, no framing),
//! and the stream. Why server pages with a plain script and no framework: docs/console.md.

mod events;
pub(super) mod session;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use super::auth::{OperatorCaller, Tokens, same_site};
use super::error::ApiError;
use session::COOKIE;

const INDEX: &str = include_str!("assets/index.html");
const SIGN_IN: &str = include_str!("assets/sign-in.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
const ICON: &str = include_str!("assets/icon.svg");

/// No inline script or style, nothing from elsewhere, no framing, no form posts elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(to_console))
        .route("/console/", web::get().to(index))
        .route("/console/sign-in", web::get().to(sign_in_page))
        .route("/console/sign-in", web::post().to(sign_in))
        .route("/console/sign-out", web::post().to(sign_out))
        .route("/console/me", web::get().to(me))
        .route("/console/events", web::get().to(events::stream))
        .route("/console/assets/{name}", web::get().to(asset));
}

/// Every console response: the security headers, and never cached (it shows live state).
fn page(content_type: &str) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    secure(&mut response);
    response.content_type(content_type);
    response
}

fn secure(response: &mut actix_web::HttpResponseBuilder) {
    response
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("x-frame-options", "DENY"))
        // Not `no-referrer`: with it a browser sends `Origin: null` on the sign-in form post.
        .insert_header(("referrer-policy", "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
}

fn redirect(to: &str) -> HttpResponse {
    let mut response = HttpResponse::SeeOther();
    secure(&mut response);
    response.insert_header((header::LOCATION, to)).finish()
}

async fn to_console() -> HttpResponse {
    redirect("/console/")
}

/// Whether this request comes with a live session (or needs none: open mode).
async fn signed_in(req: &HttpRequest) -> bool {
    use actix_web::FromRequest;
    OperatorCaller::extract(req).await.is_ok()
}

async fn index(req: HttpRequest) -> HttpResponse {
    if !signed_in(&req).await {
        return redirect("/console/sign-in");
    }
    page("text/html; charset=utf-8").body(INDEX)
}

#[derive(Deserialize)]
struct SignInQuery {
    error: Option<String>,
}

/// The sign-in form; a failed attempt comes back here with a fixed message (never text from
/// the request).
async fn sign_in_page(query: web::Query<SignInQuery>) -> HttpResponse {
    let message = match query.error.as_deref() {
        Some("token") => "That token is not valid.",
        Some("agent") => "Agent tokens cannot sign in to the console; use an operator token.",
        Some("blocked") => "Too many failed sign-ins from this address; wait a minute.",
        Some("unavailable") => "The service cannot keep a session right now; try again.",
        _ => "",
    };
    page("text/html; charset=utf-8").body(SIGN_IN.replace("{{message}}", message))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

/// Exchange an operator token for a session cookie. Failed attempts count against the same
/// per-address limit as bad bearer tokens.
async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    tokens: web::Data<Tokens>,
    form: web::Form<SignInForm>,
) -> Result<HttpResponse, ApiError> {
    same_site(&req)?;
    let limits = state.limits();
    let source = req.peer_addr().map(|a| a.ip());
    if limits.blocked(source).is_err() {
        return Ok(redirect("/console/sign-in?error=blocked"));
    }
    let Some((role, name, digest)) = tokens.identify(form.token.trim().as_bytes()) else {
        let error = match limits.failed_auth(source) {
            Some(_) => "blocked",
            None => "token",
        };
        tracing::warn!(source = ?source, "console sign-in refused: bad token");
        return Ok(redirect(&format!("/console/sign-in?error={error}")));
    };
    if role != super::auth::Role::Operator {
        tracing::warn!(token = %name, "console sign-in refused: an agent token");
        return Ok(redirect("/console/sign-in?error=agent"));
    }
    let ttl = state.settings().console.session_ttl;
    let operator = name.clone();
    let sessions = &state.sessions;
    let started = sessions.start(&operator, &digest, ttl).await;
    let Ok((id, _)) = started else {
        tracing::error!("console sign-in failed: the session could not be stored");
        return Ok(redirect("/console/sign-in?error=unavailable"));
    };
    tracing::info!(operator = %name, "console sign-in");
    let mut response = HttpResponse::SeeOther();
    secure(&mut response);
    Ok(response
        .cookie(session_cookie(&req, &state, id, ttl))
        .insert_header((header::LOCATION, "/console/"))
        .finish())
}

/// `HttpOnly`, `SameSite=Strict`, scoped to the whole site (the console calls `/api/...`);
/// `Secure` when the service is reached over TLS.
fn session_cookie(
    req: &HttpRequest,
    state: &AppState,
    id: String,
    ttl: std::time::Duration,
) -> Cookie<'static> {
    let tls = req.connection_info().scheme() == "https"
        || state.settings().server.public_url.starts_with("https://");
    Cookie::build(COOKIE, id)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(tls)
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish()
}

/// End the session (the script sends its CSRF token, as for every change).
async fn sign_out(
    req: HttpRequest,
    state: web::Data<AppState>,
    OperatorCaller(caller): OperatorCaller,
) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = req.cookie(COOKIE) {
        let sessions = &state.sessions;
        let id = cookie.value().to_string();
        sessions
            .end(&id)
            .await
            .map_err(|error| ApiError::Unavailable(error.to_string()))?;
        tracing::info!(operator = %caller.name, "console sign-out");
    }
    let mut gone = Cookie::build(COOKIE, "").path("/").finish();
    gone.make_removal();
    let mut response = HttpResponse::Ok();
    secure(&mut response);
    Ok(response
        .cookie(gone)
        .json(serde_json::json!({ "signed_out": true })))
}

/// Who is signed in, the CSRF token the script sends with changes, and the settings the
/// pages show (the session grant's length, the public address).
async fn me(
    state: web::Data<AppState>,
    tokens: web::Data<Tokens>,
    OperatorCaller(caller): OperatorCaller,
) -> HttpResponse {
    let settings = state.settings();
    page("application/json").json(serde_json::json!({
        "name": caller.name,
        "csrf": caller.csrf.unwrap_or_default(),
        "open": tokens.is_open(),
        "session_grant_seconds": settings.agents.session_grant.as_secs(),
        "max_grant_seconds": settings.agents.max_grant.as_secs(),
        "public_url": settings.server.public_url,
    }))
}

async fn asset(name: web::Path<String>) -> HttpResponse {
    let (body, content_type) = match name.as_str() {
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => {
            use actix_web::ResponseError;
            return ApiError::NotFound(format!("no console asset {name}")).error_response();
        }
    };
    page(content_type).body(body)
}
