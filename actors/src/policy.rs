//! Policy: which requests need a human at all. `[[policy.rules]]`, first match wins; a request
//! no rule matches is escalated to the operators.
//!
//! Pure: compiled once from the configuration (a bad glob or regex is an error naming the rule)
//! and evaluated by the registry for every new approval. Knows nothing of stores or actors.

use std::collections::BTreeMap;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::domain::{NewApproval, RiskLevel, Target};

/// The most distinct approvals a rule may require (`approvals_required`).
pub const MAX_APPROVALS_REQUIRED: u8 = 5;

/// What a rule does with a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Approved at once, `decided_by = "policy:<name>"`.
    Allow,
    /// Rejected at once, `decided_by = "policy:<name>"`.
    Deny,
    /// Sent to the operators (the default for requests no rule matches).
    Escalate,
}

/// One `[[policy.rules]]` entry as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Glob on the tool name: `Bash`, `mcp__github__*`, `{Read,Grep,Glob}`.
    #[serde(default = "any")]
    pub tool: String,
    /// Regexes on top-level fields of `tool_input` (`command`, `file_path`, ...): every one must
    /// find a match (unanchored; use `^…$` to anchor). A missing field does not match.
    #[serde(default)]
    pub input: BTreeMap<String, String>,
    /// Glob on the agent token's name (the authenticated caller, not the self-declared label).
    pub agent: Option<String>,
    /// Glob on the session id.
    pub session: Option<String>,
    pub action: Action,
    /// Deadline for approvals this rule escalates (within `approval_timeout.min ..= max`).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// The least risk level of requests this rule matches (the detectors may raise it).
    #[serde(default)]
    pub risk: Option<RiskLevel>,
    /// Distinct operators who must approve what this rule escalates (two-person approval);
    /// `1..=MAX_APPROVALS_REQUIRED`, escalate rules only.
    #[serde(default)]
    pub approvals_required: Option<u8>,
    /// Where what this rule escalates is announced, in place of the defaults:
    /// `telegram:<chat name>` (under `[telegram.chats]`), `email:<address>`.
    #[serde(default)]
    pub notify: Vec<String>,
}

fn any() -> String {
    "*".into()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy rule `{rule}`: {problem}")]
pub struct PolicyError {
    pub rule: String,
    pub problem: String,
}

#[derive(Debug)]
struct Rule {
    name: String,
    tool: GlobMatcher,
    input: Vec<(String, Regex)>,
    agent: Option<GlobMatcher>,
    session: Option<GlobMatcher>,
    action: Action,
    timeout: Option<Duration>,
    risk: Option<RiskLevel>,
    approvals_required: u8,
    notify: Vec<Target>,
}

/// The outcome of evaluating a request: which rule matched (if any) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule: Option<String>,
    pub action: Action,
    pub timeout: Option<Duration>,
    pub risk: Option<RiskLevel>,
    pub approvals_required: u8,
    pub route: Vec<Target>,
}

#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

fn glob(rule: &str, field: &str, pattern: &str) -> Result<GlobMatcher, PolicyError> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| PolicyError {
            rule: rule.into(),
            problem: format!("`{field}` {pattern:?} is not a valid glob: {e}"),
        })
}

impl Policy {
    pub fn compile(configs: &[RuleConfig]) -> Result<Self, PolicyError> {
        let mut rules = Vec::with_capacity(configs.len());
        let mut names = std::collections::HashSet::new();
        for config in configs {
            let name = config.name.trim();
            if name.is_empty() {
                return Err(PolicyError {
                    rule: format!("#{}", rules.len() + 1),
                    problem: "`name` must not be empty".into(),
                });
            }
            if !names.insert(name.to_string()) {
                return Err(PolicyError {
                    rule: name.into(),
                    problem: "two rules have this name; names appear in `decided_by`".into(),
                });
            }
            let input = config
                .input
                .iter()
                .map(|(field, pattern)| {
                    Regex::new(pattern)
                        .map(|re| (field.clone(), re))
                        .map_err(|e| PolicyError {
                            rule: name.into(),
                            problem: format!("`input.{field}` is not a valid regex: {e}"),
                        })
                })
                .collect::<Result<_, _>>()?;
            if config.action == Action::Allow && config.session.is_some() && config.agent.is_none()
            {
                // The agent names its own session: any agent token could claim a session id
                // and be allowed. Tie the rule to the token too.
                return Err(PolicyError {
                    rule: name.into(),
                    problem: "an allow rule with `session` must also name `agent`: session ids \
                              are chosen by the agent, so any agent token could match it"
                        .into(),
                });
            }
            let approvals_required = config.approvals_required.unwrap_or(1);
            if !(1..=MAX_APPROVALS_REQUIRED).contains(&approvals_required) {
                return Err(PolicyError {
                    rule: name.into(),
                    problem: format!(
                        "`approvals_required` is {approvals_required}; allowed: 1 to \
                         {MAX_APPROVALS_REQUIRED}"
                    ),
                });
            }
            if approvals_required > 1 && config.action != Action::Escalate {
                return Err(PolicyError {
                    rule: name.into(),
                    problem: "`approvals_required` needs `action = \"escalate\"`: only what \
                              goes to the operators is approved by them"
                        .into(),
                });
            }
            let notify =
                crate::domain::parse_targets(&config.notify).map_err(|problem| PolicyError {
                    rule: name.into(),
                    problem: format!("`notify`: {problem}"),
                })?;
            if !notify.is_empty() && config.action != Action::Escalate {
                return Err(PolicyError {
                    rule: name.into(),
                    problem: "`notify` needs `action = \"escalate\"`: what a rule decides itself \
                              is announced to nobody"
                        .into(),
                });
            }
            rules.push(Rule {
                name: name.into(),
                tool: glob(name, "tool", &config.tool)?,
                input,
                agent: config
                    .agent
                    .as_deref()
                    .map(|p| glob(name, "agent", p))
                    .transpose()?,
                session: config
                    .session
                    .as_deref()
                    .map(|p| glob(name, "session", p))
                    .transpose()?,
                action: config.action,
                timeout: config.timeout,
                risk: config.risk,
                approvals_required,
                notify,
            });
        }
        Ok(Self { rules })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that matches `new`, or escalate.
    pub fn evaluate(&self, new: &NewApproval) -> Verdict {
        if self.rules.is_empty() {
            return escalate();
        }
        let input: Option<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(&new.tool_input).ok();
        self.rules
            .iter()
            .find(|rule| rule.matches(new, input.as_ref()))
            .map_or_else(escalate, |rule| Verdict {
                rule: Some(rule.name.clone()),
                action: rule.action,
                timeout: rule.timeout,
                risk: rule.risk,
                approvals_required: rule.approvals_required,
                route: rule.notify.clone(),
            })
    }
}

fn escalate() -> Verdict {
    Verdict {
        rule: None,
        action: Action::Escalate,
        timeout: None,
        risk: None,
        approvals_required: 1,
        route: Vec::new(),
    }
}

impl Rule {
    fn matches(
        &self,
        new: &NewApproval,
        input: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> bool {
        self.tool.is_match(&new.tool_name)
            && self
                .agent
                .as_ref()
                .is_none_or(|g| g.is_match(&new.requested_by))
            && self
                .session
                .as_ref()
                .is_none_or(|g| g.is_match(&new.session_id))
            && self.input.iter().all(|(field, re)| {
                match input.and_then(|fields| fields.get(field)) {
                    Some(serde_json::Value::String(text)) => re.is_match(text),
                    Some(other) => re.is_match(&other.to_string()),
                    None => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml_like: Vec<RuleConfig>) -> Policy {
        Policy::compile(&toml_like).expect("valid rules")
    }

    fn rule(name: &str, tool: &str, action: Action) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            tool: tool.into(),
            input: BTreeMap::new(),
            agent: None,
            session: None,
            action,
            timeout: None,
            risk: None,
            approvals_required: None,
            notify: Vec::new(),
        }
    }

    fn request(tool: &str, input: &str) -> NewApproval {
        NewApproval {
            session_id: "s1".into(),
            tool_name: tool.into(),
            tool_input: input.into(),
            reason: None,
            agent: None,
            requested_by: "ci".into(),
            idempotency_key: None,
            timeout: Duration::from_secs(60),
            max_timeout: None,
            idempotent_while_pending: false,
            cwd: None,
        }
    }

    #[test]
    fn first_match_wins_and_unmatched_requests_escalate() {
        let mut rm = rule("no-rm-rf", "Bash", Action::Deny);
        rm.input
            .insert("command".into(), r"rm\s+-[a-zA-Z]*r[a-zA-Z]*f?\s+/".into());
        let policy = rules(vec![
            rule("read-only", "{Read,Grep,Glob}", Action::Allow),
            rm,
            rule("bash", "Bash", Action::Escalate),
        ]);
        let verdict = policy.evaluate(&request("Grep", "{}"));
        assert_eq!(
            (verdict.rule.as_deref(), verdict.action),
            (Some("read-only"), Action::Allow)
        );
        let verdict = policy.evaluate(&request("Bash", r#"{"command":"rm -rf /"}"#));
        assert_eq!(verdict.rule.as_deref(), Some("no-rm-rf"));
        let verdict = policy.evaluate(&request("Bash", r#"{"command":"ls"}"#));
        assert_eq!(verdict.rule.as_deref(), Some("bash"));
        let verdict = policy.evaluate(&request("Write", r#"{"file_path":"/x"}"#));
        assert_eq!((verdict.rule, verdict.action), (None, Action::Escalate));
    }

    #[test]
    fn a_bad_rule_is_named() {
        let mut bad = rule("broken", "Bash", Action::Deny);
        bad.input.insert("command".into(), "(".into());
        let error = Policy::compile(&[bad]).expect_err("invalid regex");
        assert_eq!(error.rule, "broken");
        assert!(error.problem.contains("input.command"), "{error}");
        let error = Policy::compile(&[rule("g", "[", Action::Allow)]).expect_err("invalid glob");
        assert!(error.to_string().contains("policy rule `g`"), "{error}");
    }

    #[test]
    fn an_allow_rule_on_a_session_must_name_the_agent() {
        let mut by_session = rule("trusted session", "Bash", Action::Allow);
        by_session.session = Some("release-*".into());
        let error = Policy::compile(&[by_session.clone()]).expect_err("any token could match");
        assert_eq!(error.rule, "trusted session");
        assert!(error.problem.contains("`agent`"), "{error}");
        by_session.agent = Some("release-bot".into());
        assert_eq!(rules(vec![by_session]).len(), 1);
        // Deny and escalate rules on a session only make it stricter: allowed alone.
        let mut deny = rule("no bash in ci", "Bash", Action::Deny);
        deny.session = Some("ci-*".into());
        assert_eq!(rules(vec![deny]).len(), 1);
    }

    #[test]
    fn a_quorum_is_bounded_and_only_for_escalations() {
        let mut two = rule("two people", "Bash", Action::Escalate);
        two.approvals_required = Some(2);
        two.risk = Some(RiskLevel::High);
        let verdict = rules(vec![two.clone()]).evaluate(&request("Bash", "{}"));
        assert_eq!(
            (verdict.approvals_required, verdict.risk),
            (2, Some(RiskLevel::High))
        );
        two.approvals_required = Some(MAX_APPROVALS_REQUIRED + 1);
        let error = Policy::compile(&[two.clone()]).expect_err("too many");
        assert!(error.problem.contains("allowed: 1 to"), "{error}");
        two.approvals_required = Some(0);
        assert!(Policy::compile(&[two.clone()]).is_err());
        two.approvals_required = Some(2);
        two.action = Action::Allow;
        let error = Policy::compile(&[two]).expect_err("allow with a quorum");
        assert!(error.problem.contains("escalate"), "{error}");
    }
}
