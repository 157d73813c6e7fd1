//! Bearer tokens → caller identity. Tokens are compared in constant time and never logged.
//!
//! With no tokens configured (allowed only on a loopback bind) every caller is `anonymous` and
//! may act as agent and operator.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use subtle::ConstantTimeEq;

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

    fn is_open(&self) -> bool {
        self.entries.load().is_empty()
    }

    /// Every configured digest is compared, so timing does not reveal which one matched.
    fn identify(&self, presented: &[u8]) -> Option<(Role, String)> {
        let presented = crate::settings::sha256(presented);
        let mut found = None;
        for (role, name, digest) in self.entries.load().iter() {
            if bool::from(digest.as_slice().ct_eq(presented.as_slice())) {
                found = Some((*role, name.clone()));
            }
        }
        found
    }
}

/// Who is calling. `anonymous` in open mode.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    role: Option<Role>,
}

impl Caller {
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

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let tokens = req
        .app_data::<web::Data<Tokens>>()
        .ok_or_else(|| ApiError::Unavailable("authentication is not configured".into()))?;
    if tokens.is_open() {
        return Ok(Caller {
            name: "anonymous".into(),
            role: None,
        });
    }
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
    let (role, name) = tokens
        .identify(presented.as_bytes())
        .ok_or(ApiError::Unauthorized)?;
    Ok(Caller {
        name,
        role: Some(role),
    })
}

/// Any valid token.
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

/// An agent token.
pub struct AgentCaller(pub Caller);

impl FromRequest for AgentCaller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|caller| {
            if caller.may(Role::Agent) {
                Ok(AgentCaller(caller))
            } else {
                Err(ApiError::Forbidden("this route needs an agent token"))
            }
        }))
    }
}

/// An operator token.
pub struct OperatorCaller(pub Caller);

impl FromRequest for OperatorCaller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|caller| {
            if caller.may(Role::Operator) {
                Ok(OperatorCaller(caller))
            } else {
                Err(ApiError::Forbidden("this route needs an operator token"))
            }
        }))
    }
}

/// Access to metrics and diagnostics: anyone, unless `monitoring.require_auth` asks for an
/// operator token. (On the separate `monitoring.bind` listener no token is asked.)
pub struct MonitoringAccess;

impl FromRequest for MonitoringAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let open = req
            .app_data::<web::Data<MonitoringOpen>>()
            .is_some_and(|open| open.0);
        if open {
            return ready(Ok(MonitoringAccess));
        }
        let required = req
            .app_data::<web::Data<super::AppState>>()
            .is_some_and(|state| state.settings().monitoring.require_auth);
        if !required {
            return ready(Ok(MonitoringAccess));
        }
        let caller = OperatorCaller::from_request(req, payload).into_inner();
        ready(caller.map(|_| MonitoringAccess))
    }
}

/// Marks the separate monitoring listener, where no token is asked.
pub struct MonitoringOpen(pub bool);
