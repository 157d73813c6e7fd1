//! The OpenAPI 3 description of every route, generated from the handlers' annotations (utoipa),
//! served at `/api/openapi.json` with a Swagger UI at `/swagger-ui/`, and committed as
//! `docs/openapi.json` (a test fails when the two drift).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    admin, approvals, decisions, diagnostics, grants, health, history, metrics, search, telegram,
};

/// The hook routes are registered per agent by a loop; these stand-ins document them.
mod hooks_doc {
    /// Claude Code PreToolUse hook: held until a decision; always 200 with the hook output
    /// (`hookSpecificOutput.permissionDecision` allow | deny | ask).
    #[utoipa::path(post, path = "/hooks/claude-code/pre-tool-use", tag = "hooks", request_body = Object,
        responses((status = 200, description = "Claude Code's hook output; deny on any doubt", body = Object)),
        security(("bearer" = [])))]
    #[allow(dead_code)]
    fn claude_pre_tool_use() {}

    /// Claude Code PermissionRequest hook (`hookSpecificOutput.decision.behavior` allow | deny).
    #[utoipa::path(post, path = "/hooks/claude-code/permission-request", tag = "hooks", request_body = Object,
        responses((status = 200, body = Object)), security(("bearer" = [])))]
    #[allow(dead_code)]
    fn claude_permission_request() {}

    /// Codex PermissionRequest hook (never `updatedInput`, `updatedPermissions` or `interrupt`).
    #[utoipa::path(post, path = "/hooks/codex/permission-request", tag = "hooks", request_body = Object,
        responses((status = 200, body = Object)), security(("bearer" = [])))]
    #[allow(dead_code)]
    fn codex_permission_request() {}

    /// Gemini CLI BeforeTool hook (`decision` allow | deny with `reason`).
    #[utoipa::path(post, path = "/hooks/gemini/before-tool", tag = "hooks", request_body = Object,
        responses((status = 200, body = Object)), security(("bearer" = [])))]
    #[allow(dead_code)]
    fn gemini_before_tool() {}
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "approval-gate",
        description = "Human-approval gateway for AI agents. Errors are `{\"error\": <stable code>, \"message\"}`."
    ),
    paths(
        approvals::create, approvals::list, search::export, approvals::get, decisions::cancel, decisions::decide,
        history::events, grants::list, grants::revoke, admin::list, admin::requeue, admin::requeue_channel, admin::backup,
        diagnostics::database, diagnostics::circuit_breaker, diagnostics::metrics_summary,
        diagnostics::crash, diagnostics::lose_wakes, diagnostics::fail_commits, health::health, health::live, health::ready,
        metrics::metrics, telegram::webhook,
        hooks_doc::claude_pre_tool_use, hooks_doc::claude_permission_request,
        hooks_doc::codex_permission_request, hooks_doc::gemini_before_tool
    ),
    components(schemas(
        approvals::CreateBody, decisions::DecisionBody, decisions::DecisionKind,
        super::view::ApprovalView, super::view::RiskView, super::view::RiskReasonView,
        super::view::VoteView, super::error::ErrorBody, grants::GrantView,
        admin::RequeueChannelBody
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document as served and committed (pretty JSON, trailing newline).
pub fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}

pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.route(
        "/api/openapi.json",
        actix_web::web::get().to(|| async {
            actix_web::HttpResponse::Ok()
                .content_type("application/json")
                .body(document())
        }),
    )
    // The UI is pointed at the route above instead of being handed the document: given one,
    // it keeps its own copy in every worker (about 1.5 MB each, resident for the process's life).
    .service(
        utoipa_swagger_ui::SwaggerUi::new("/swagger-ui/{_:.*}")
            .config(utoipa_swagger_ui::Config::new(["/api/openapi.json"])),
    );
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is the served document. Regenerate with
    /// `UPDATE_OPENAPI=1 cargo test --lib openapi`.
    #[test]
    fn the_committed_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is out of date: run UPDATE_OPENAPI=1 cargo test --lib openapi"
        );
    }
}
