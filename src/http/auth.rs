//! Bearer tokens → caller identity. Tokens are compared in constant time and never logged.
//!
//! With no tokens configured (allowed only on a loopback bind) every caller is `anonymous` and
//! may act as agent and operator.
//!
//! A browser is an operator through a console session cookie instead (`console/session.rs`);
//! a state-changing request it sends must carry its session's CSRF token. Every
//! state-changing request a browser marks as coming from another site (`Origin`,
//! `Sec-Fetch-Site`) is refused, whatever credentials it carries, open mode included.

use std::future::ready;

use actix_web::dev::Payload;
use actix_web::http::{Method, header};
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::{FutureExt, LocalBoxFuture};
use subtle::ConstantTimeEq;

use super::console::session::{COOKIE, CSRF_HEADER, Sessions};
use super::error::ApiError;
use crate::settings::AuthSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Operator,
}

/// Configured tokens, held by the HTTP layer only, as SHA-256 digests: a token may be given in
/// the configuration as `sha256:<hex>` (so a leaked config file leaks no token) or in plain,
/// which is hashed at start. A presented token is hashed once and compared with every digest.
pub struct Tokens {
    /// Replaced whole by a reload.
    entries: arc_swap::ArcSwap<Vec<(Role, String, [u8; 32])>>,
}

impl Tokens {
    pub fn new(auth: &AuthSettings) -> Self {
        Self {
            entries: arc_swap::ArcSwap::from_pointee(Self::entries(auth)),
        }
    }

    /// Take the tokens of a reloaded configuration.
    pub fn replace(&self, auth: &AuthSettings) {
        self.entries.store(std::sync::Arc::new(Self::entries(auth)));
    }

    fn entries(auth: &AuthSettings) -> Vec<(Role, String, [u8; 32])> {
        let agents = auth
            .agent_tokens
            .iter()
            .map(|(n, t)| (Role::Agent, n.clone(), crate::settings::token_digest(t)));
        let operators = auth
            .operator_tokens
            .iter()
            .map(|(n, t)| (Role::Operator, n.clone(), crate::settings::token_digest(t)));
        agents.chain(operators).collect()
    }

    pub(super) fn is_open(&self) -> bool {
        self.entries.load().is_empty()
    }

    /// Every configured digest is compared, so timing does not reveal which one matched.
    pub(super) fn identify(&self, presented: &[u8]) -> Option<(Role, String, [u8; 32])> {
        let presented = crate::settings::sha256(presented);
        let mut found = None;
        for (role, name, digest) in self.entries.load().iter() {
            if bool::from(digest.as_slice().ct_eq(presented.as_slice())) {
                found = Some((*role, name.clone(), *digest));
            }
        }
        found
    }

    /// The digest of operator token `name` as configured now (`None`: no such operator).
    pub(super) fn operator_digest(&self, name: &str) -> Option<[u8; 32]> {
        self.entries
            .load()
            .iter()
            .find(|(role, n, _)| *role == Role::Operator && n == name)
            .map(|(_, _, digest)| *digest)
    }
}

/// Who is calling. `anonymous` in open mode.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    role: Option<Role>,
    /// Signed in through the console: its session's CSRF token (the page reads it once).
    pub csrf: Option<String>,
}

impl Caller {
    fn console(name: String, csrf: String) -> Self {
        Self {
            name,
            role: Some(Role::Operator),
            csrf: Some(csrf),
        }
    }

    fn may(&self, role: Role) -> bool {
        self.role.is_none_or(|r| r == role)
    }

    /// Whether this caller may see an approval requested by `requested_by`: operators (and
    /// everyone in open mode) see all; an agent token sees only what it created.
    pub fn sees(&self, requested_by: &str) -> bool {
        match self.role {
            None | Some(Role::Operator) => true,
            Some(Role::Agent) => self.name == requested_by,
        }
    }
}

fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuse a state-changing request a browser says comes from another site. Agents and curl
/// send neither header; a browser always sends `Origin` on a cross-origin POST.
pub(super) fn same_site(req: &HttpRequest) -> Result<(), ApiError> {
    if safe(req.method()) {
        return Ok(());
    }
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(ApiError::CrossSite(
            "a state-changing request from another site is refused",
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("null");
    let origin_host = origin.split_once("://").map_or("", |(_, host)| host);
    let own = req.connection_info().host().to_string();
    let public = req
        .app_data::<web::Data<super::AppState>>()
        .map(|state| state.settings().server.public_url.clone())
        .unwrap_or_default();
    let public_host = public
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    if !origin_host.is_empty()
        && (origin_host.eq_ignore_ascii_case(&own) || origin_host.eq_ignore_ascii_case(public_host))
    {
        return Ok(());
    }
    Err(ApiError::CrossSite(
        "a state-changing request from another origin is refused",
    ))
}

fn authenticate(req: &HttpRequest) -> LocalBoxFuture<'static, Result<Caller, ApiError>> {
    if let Err(refused) = same_site(req) {
        return ready(Err(refused)).boxed_local();
    }
    let Some(tokens) = req.app_data::<web::Data<Tokens>>().cloned() else {
        return ready(Err(ApiError::Unavailable(
            "authentication is not configured".into(),
        )))
        .boxed_local();
    };
    if tokens.is_open() {
        return ready(Ok(Caller {
            name: "anonymous".into(),
            role: None,
            csrf: None,
        }))
        .boxed_local();
    }
    if !req.headers().contains_key(header::AUTHORIZATION)
        && let Some(state) = req.app_data::<web::Data<super::AppState>>()
        && state.settings().console.enabled
        && let Some(cookie) = req.cookie(COOKIE)
    {
        let sessions = std::sync::Arc::clone(&state.sessions);
        return by_session(req, sessions, tokens, cookie.value().to_string()).boxed_local();
    }
    ready(by_token(req, &tokens)).boxed_local()
}

/// A console request: its session names the operator; a change must carry the CSRF token.
fn by_session(
    req: &HttpRequest,
    sessions: std::sync::Arc<Sessions>,
    tokens: web::Data<Tokens>,
    id: String,
) -> impl std::future::Future<Output = Result<Caller, ApiError>> + 'static {
    let presented_csrf = (!safe(req.method())).then(|| {
        req.headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    });
    async move {
        let session = sessions
            .find(&id, |name| tokens.operator_digest(name))
            .await
            .ok_or(ApiError::Unauthorized)?;
        if let Some(presented) = presented_csrf
            && !bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes()))
        {
            return Err(ApiError::CrossSite(
                "this console request lacks its session's CSRF token; reload the console",
            ));
        }
        Ok(Caller::console(session.name, session.csrf))
    }
}

fn by_token(req: &HttpRequest, tokens: &Tokens) -> Result<Caller, ApiError> {
    let limits = req
        .app_data::<web::Data<super::AppState>>()
        .map(|state| state.limits());
    let source = req.peer_addr().map(|a| a.ip());
    if let Some(limits) = &limits {
        limits.blocked(source)?;
    }
    let identified = identify(req, tokens);
    if identified.is_err()
        && let Some(limits) = &limits
        && let Some(blocked) = limits.failed_auth(source)
    {
        return Err(blocked);
    }
    identified
}

fn identify(req: &HttpRequest, tokens: &Tokens) -> Result<Caller, ApiError> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    let (role, name, _) = tokens
        .identify(presented.as_bytes())
        .ok_or(ApiError::Unauthorized)?;
    Ok(Caller {
        name,
        role: Some(role),
        csrf: None,
    })
}

/// Any valid token.
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        authenticate(req)
    }
}

/// An agent token.
pub struct AgentCaller(pub Caller);

impl FromRequest for AgentCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        authenticate(req)
            .map(|caller| {
                let caller = caller?;
                if caller.may(Role::Agent) {
                    Ok(AgentCaller(caller))
                } else {
                    Err(ApiError::Forbidden("this route needs an agent token"))
                }
            })
            .boxed_local()
    }
}

/// An operator token.
pub struct OperatorCaller(pub Caller);

impl FromRequest for OperatorCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        authenticate(req)
            .map(|caller| {
                let caller = caller?;
                if caller.may(Role::Operator) {
                    Ok(OperatorCaller(caller))
                } else {
                    Err(ApiError::Forbidden("this route needs an operator token"))
                }
            })
            .boxed_local()
    }
}

/// Access to metrics and diagnostics: anyone, unless `monitoring.require_auth` asks for an
/// operator token. (On the separate `monitoring.bind` listener no token is asked.)
pub struct MonitoringAccess;

impl FromRequest for MonitoringAccess {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let open = req
            .app_data::<web::Data<MonitoringOpen>>()
            .is_some_and(|open| open.0);
        if open {
            return ready(Ok(MonitoringAccess)).boxed_local();
        }
        let required = req
            .app_data::<web::Data<super::AppState>>()
            .is_some_and(|state| state.settings().monitoring.require_auth);
        if !required {
            return ready(Ok(MonitoringAccess)).boxed_local();
        }
        OperatorCaller::from_request(req, payload)
            .map(|caller| caller.map(|_| MonitoringAccess))
            .boxed_local()
    }
}

/// Marks the separate monitoring listener, where no token is asked.
pub struct MonitoringOpen(pub bool);
