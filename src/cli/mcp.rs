//! `approval-gate mcp`: a stdio MCP server with one tool, `approval_prompt`, for Claude Code's
//! `--permission-prompt-tool mcp__approval-gate__approval_prompt`.
//!
//! The tool asks the service like a hook does (`POST /hooks/claude-code/permission-request`,
//! held until a decision) and answers with Claude Code's permission-prompt result: one text
//! block holding `{"behavior":"allow","updatedInput":<input>}` or
//! `{"behavior":"deny","message":"..."}`. `updatedInput` is mandatory on allow. stdout carries
//! JSON-RPC only (rmcp); logs go to stderr. Any failure to ask is a deny.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

use super::agent_client::{AgentClient, ServiceArgs, runtime};

pub const TOOL: &str = "approval_prompt";

#[derive(Args, Debug)]
pub struct McpArgs {
    /// Session id recorded for requests. Claude Code passes none to the tool, but starts one
    /// MCP server per run: by default each server makes up its own (`mcp-<ulid>`), so a
    /// session grant covers this run of Claude Code and no other.
    #[arg(long, value_name = "S")]
    pub session: Option<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

struct ApprovalPrompt {
    client: Arc<AgentClient>,
    session: String,
}

fn input_schema() -> Arc<serde_json::Map<String, Value>> {
    let schema = json!({
        "type": "object",
        "properties": {
            "tool_name": {"type": "string", "description": "The tool Claude wants to run"},
            "input": {"type": "object", "description": "The tool's input"},
            "tool_use_id": {"type": "string", "description": "The tool call's id"}
        },
        "required": ["tool_name", "input"]
    });
    Arc::new(schema.as_object().cloned().unwrap_or_default())
}

impl ServerHandler for ApprovalPrompt {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("approval-gate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Permission prompts for Claude Code: approval_prompt asks a human through approval-gate.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            TOOL,
            "Ask a human operator (Telegram, REST or CLI) whether a tool call may run; waits for the decision.",
            input_schema(),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != TOOL {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {}", request.name),
                None,
            ));
        }
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let result = self.decide(&arguments).await;
        Ok(CallToolResult::success(vec![ContentBlock::text(result.to_string())]).into())
    }
}

impl ApprovalPrompt {
    /// Claude Code's permission-prompt result for one call; every failure is a deny.
    async fn decide(&self, arguments: &Value) -> Value {
        let (Some(tool_name), Some(input)) =
            (arguments["tool_name"].as_str(), arguments.get("input"))
        else {
            return deny("approval_prompt needs `tool_name` and `input`".into());
        };
        let hook_input = json!({
            "session_id": self.session,
            "hook_event_name": "PermissionRequest",
            "tool_name": tool_name,
            "tool_input": input,
            "tool_use_id": arguments.get("tool_use_id"),
        });
        let url = self.client.url("/hooks/claude-code/permission-request");
        let answer = async {
            let response = self
                .client
                .http
                .post(url)
                .json(&hook_input)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "approval-gate at {} could not be reached: {e}",
                        self.client.shown()
                    )
                })?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("the answer was cut off: {e}"))?;
            if !status.is_success() {
                return Err(format!("approval-gate answered HTTP {status}"));
            }
            serde_json::from_slice::<Value>(&body)
                .map_err(|e| format!("the answer is not JSON: {e}"))
        }
        .await;
        match answer {
            Ok(output) => {
                // PermissionRequest's answer: `decision.behavior` allow | deny; no decision
                // (the gate's "ask") is a deny here, since nobody else will be asked.
                let decision = &output["hookSpecificOutput"]["decision"];
                match decision["behavior"].as_str() {
                    Some("allow") => json!({"behavior": "allow", "updatedInput": input}),
                    _ => deny(
                        decision["message"]
                            .as_str()
                            .or(output["systemMessage"].as_str())
                            .unwrap_or("approval-gate gave no decision")
                            .to_string(),
                    ),
                }
            }
            Err(reason) => {
                eprintln!("approval-gate mcp: {reason}");
                deny(format!(
                    "approval-gate could not be asked, so the call is denied: {reason}"
                ))
            }
        }
    }
}

fn deny(message: String) -> Value {
    json!({"behavior": "deny", "message": message})
}

pub fn run(args: McpArgs) -> ExitCode {
    let served = AgentClient::new(&args.service, None).and_then(|client| {
        let server = ApprovalPrompt {
            client: Arc::new(client),
            session: args
                .session
                .unwrap_or_else(|| format!("mcp-{}", ulid::Ulid::new())),
        };
        runtime()?.block_on(async move {
            let running = server
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| format!("MCP initialisation failed: {e}"))?;
            running
                .waiting()
                .await
                .map(|_| ())
                .map_err(|e| format!("the MCP session failed: {e}"))
        })
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("approval-gate mcp: {message}");
            ExitCode::FAILURE
        }
    }
}
