//! Remediation verbs over the `Orchestrator` gRPC service: `remediate`, `migrate`, `scale`,
//! `recommendations`, `pending`, `approve`, `reject` and `audit`.
//!
//! Every verb prints a table, or one JSON document with `--json`. An action that ended
//! `failed` or `rolled_back` is still printed in full, and augurctl then exits nonzero.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use augur_proto::v1::{self, orchestrator_client::OrchestratorClient};
use clap::Subcommand;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::output::{print_json, table, time};

#[derive(Subcommand)]
pub enum OrchestrateCmd {
    /// Remediate a workload now (HOST/WORKLOAD): a chosen action, the knowledge base's
    /// choice for a failure type, or an explicit plan (--plan).
    Remediate {
        /// HOST/WORKLOAD (the workload's declared name on that host).
        target: Option<String>,
        /// resize_memory, resize_cpu, restart, promote_standby, migrate or scale_out.
        #[arg(long)]
        action: Option<String>,
        /// Failure type to remediate (the knowledge base and bandit pick the action).
        #[arg(long)]
        failure_type: Option<String>,
        /// Action argument as NAME=VALUE (repeatable), e.g. memory_max=1GiB.
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        args: Vec<String>,
        /// An ActionPlan as a JSON file (`-` for stdin), instead of TARGET and --action.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Show exactly what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why (recorded in the audit trail).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Live-migrate a stateless workload (HOST/WORKLOAD) to another host of its resource set.
    Migrate {
        /// HOST/WORKLOAD on the source host.
        source: String,
        /// Target host (default: chosen by tier, capacity and predicted demand).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Scale a resource set to its recommended size, or by --delta instances.
    Scale {
        set: String,
        /// Instances to add (positive) or remove (negative); default: the recommendation.
        #[arg(long, allow_hyphen_values = true)]
        delta: Option<i32>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Recommended sizes of resource sets, from forecasts of their demand.
    Recommendations {
        /// One resource set (default: all).
        set: Option<String>,
    },
    /// Decisions waiting for an operator's approval.
    Pending,
    /// Approve a pending action (it runs now; the result is printed).
    Approve {
        action_id: String,
        /// Who approves (default: $USER).
        #[arg(long)]
        operator: Option<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject a pending action.
    Reject {
        action_id: String,
        #[arg(long)]
        operator: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The audit trail (predictions, decisions, commands, outcomes...); --verify checks its
    /// hash chain.
    Audit {
        /// Only this resource: HOST or HOST/WORKLOAD.
        #[arg(long)]
        resource: Option<String>,
        /// Only this action id.
        #[arg(long)]
        action: Option<String>,
        /// Only this kind (repeatable): prediction, decision, command, outcome, halt,
        /// approval, workflow_step, workflow.
        #[arg(long)]
        kind: Vec<String>,
        /// How far back, e.g. 1h.
        #[arg(long)]
        since: Option<String>,
        /// At most this many records (the newest).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Check the hash chain instead of listing (exit 1 when broken).
        #[arg(long)]
        verify: bool,
    },
}

fn operator(o: Option<String>) -> String {
    o.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into())
}

fn split_target(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('/') {
        Some((h, w)) if !h.is_empty() && !w.is_empty() && !w.contains('/') => Ok((h.to_owned(), w.to_owned())),
        _ => bail!("{s:?} must be HOST/WORKLOAD (the workload's declared name on that host)"),
    }
}

fn parse_args(args: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for a in args {
        let (k, v) = a.split_once('=').with_context(|| format!("--arg {a:?} must be NAME=VALUE"))?;
        if k.is_empty() {
            bail!("--arg {a:?} must be NAME=VALUE");
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn read_plan(p: &PathBuf) -> anyhow::Result<String> {
    let text = if p.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the plan from stdin")?
    } else {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
    };
    // Checked here for a clear message; the aggregator validates the plan itself.
    serde_json::from_str::<Value>(&text).with_context(|| format!("{} is not JSON", p.display()))?;
    Ok(text)
}

pub async fn run(ch: Channel, cmd: OrchestrateCmd, json: bool) -> anyhow::Result<()> {
    let mut c = OrchestratorClient::new(ch).max_decoding_message_size(64 << 20);
    match cmd {
        OrchestrateCmd::Remediate { target, action, failure_type, args, plan, dry_run, reason } => {
            let (host, workload) = match (&target, &plan) {
                (Some(t), None) => split_target(t)?,
                (None, Some(_)) => (String::new(), String::new()),
                (Some(_), Some(_)) => bail!("give either HOST/WORKLOAD or --plan, not both"),
                (None, None) => bail!("give HOST/WORKLOAD (with --action or --failure-type) or --plan FILE"),
            };
            if plan.is_none() && action.is_none() && failure_type.is_none() {
                bail!("give --action or --failure-type (or --plan)");
            }
            let req = v1::RemediateRequest {
                host,
                workload,
                action: action.unwrap_or_default(),
                failure_type: failure_type.unwrap_or_default(),
                args: parse_args(&args)?,
                plan_json: plan.as_ref().map(read_plan).transpose()?.unwrap_or_default(),
                dry_run,
                reason,
            };
            action_result(&c.remediate(req).await?.into_inner(), json)
        }
        OrchestrateCmd::Migrate { source, to, dry_run, reason } => {
            let (source_host, workload) = split_target(&source)?;
            let req = v1::OrchestrateMigrationRequest {
                workload,
                source_host,
                target_host: to.unwrap_or_default(),
                dry_run,
                reason,
            };
            action_result(&c.orchestrate_migration(req).await?.into_inner(), json)
        }
        OrchestrateCmd::Scale { set, delta, dry_run, reason } => {
            if delta == Some(0) {
                bail!("--delta 0 scales nothing; omit it to use the recommendation");
            }
            let req = v1::PredictiveScaleRequest { set, delta: delta.unwrap_or(0), dry_run, reason };
            action_result(&c.predictive_scale(req).await?.into_inner(), json)
        }
        OrchestrateCmd::Recommendations { set } => {
            let r = c
                .scaling_recommendations(v1::ScalingRecommendationsRequest { set: set.unwrap_or_default() })
                .await?
                .into_inner();
            recommendations(&r.recommendations, json)
        }
        OrchestrateCmd::Pending => {
            let r = c.list_pending(v1::ListPendingRequest {}).await?.into_inner();
            pending(&r.pending, json)
        }
        OrchestrateCmd::Approve { action_id, operator: op, comment } => {
            let req = v1::ApproveRequest { action_id, operator: operator(op), comment };
            action_result(&c.approve(req).await?.into_inner(), json)
        }
        OrchestrateCmd::Reject { action_id, operator: op, reason } => {
            let r = c.reject(v1::RejectRequest { action_id, operator: operator(op), reason }).await?.into_inner();
            if json {
                print_json(json!({"action_id": r.action_id, "rejected": true}))
            } else {
                println!("rejected {}", r.action_id);
                Ok(())
            }
        }
        OrchestrateCmd::Audit { resource, action, kind, since, limit, verify } => {
            if verify {
                let r = c.verify_audit(v1::VerifyAuditRequest {}).await?.into_inner();
                if json {
                    print_json(json!({"ok": r.ok, "records": r.records, "first_bad_seq": r.first_bad_seq,
                                      "message": r.message}))?;
                } else if r.ok {
                    println!("audit trail intact: {} records chain from the first to the last", r.records);
                } else {
                    println!("audit trail BROKEN at record {}: {}", r.first_bad_seq, r.message);
                }
                if !r.ok {
                    bail!("the audit trail's hash chain is broken at record {}", r.first_bad_seq);
                }
                return Ok(());
            }
            let since_ms = match since {
                Some(s) => {
                    let d = augur_core::units::parse_duration(&s).context("--since")?;
                    augur_core::time::now_ms() - d.as_millis() as i64
                }
                None => 0,
            };
            let req = v1::ListRemediationEventsRequest {
                resource: resource.unwrap_or_default(),
                action_id: action.unwrap_or_default(),
                kinds: kind,
                since_ms,
                limit,
            };
            let r = c.list_remediation_events(req).await?.into_inner();
            audit(&r.records, json)
        }
    }
}

fn status_name(s: i32) -> &'static str {
    match v1::ActionStatus::try_from(s).unwrap_or(v1::ActionStatus::Unspecified) {
        v1::ActionStatus::Succeeded => "succeeded",
        v1::ActionStatus::RolledBack => "rolled_back",
        v1::ActionStatus::Failed => "failed",
        v1::ActionStatus::DryRun => "dry_run",
        v1::ActionStatus::PendingApproval => "pending_approval",
        v1::ActionStatus::NothingToDo => "nothing_to_do",
        v1::ActionStatus::Started => "started",
        v1::ActionStatus::FollowUpFailed => "follow_up_failed",
        v1::ActionStatus::Unspecified => "unspecified",
    }
}

fn plan_value(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.into())) }
}

fn step_json(s: &v1::StepResult) -> Value {
    let args: std::collections::BTreeMap<_, _> = s.args.iter().collect();
    json!({"step": s.step, "host": s.host, "resource": s.resource, "command_id": s.command_id,
           "kind": s.kind, "args": args, "status": s.status, "message": s.message,
           "details": s.details.iter().collect::<std::collections::BTreeMap<_, _>>(),
           "started_ms": s.started_ms, "finished_ms": s.finished_ms})
}

/// Prints an action's result; an action that failed or was rolled back is an error.
pub fn action_result(r: &v1::ActionResult, json: bool) -> anyhow::Result<()> {
    let status = status_name(r.status);
    if json {
        print_json(json!({"action_id": r.action_id, "status": status, "plan": plan_value(&r.plan_json),
                          "steps": r.steps.iter().map(step_json).collect::<Vec<_>>(), "message": r.message,
                          "detail": plan_value(&r.detail_json)}))?;
    } else {
        println!(
            "action {}: {status}{}",
            r.action_id,
            if r.message.is_empty() { String::new() } else { format!(" ({})", r.message) }
        );
        if !r.steps.is_empty() {
            let rows = r
                .steps
                .iter()
                .map(|s| {
                    let mut args: Vec<String> = s.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    args.sort();
                    vec![
                        s.step.clone(),
                        format!("{}/{}", s.host, s.resource),
                        s.kind.clone(),
                        args.join(","),
                        s.status.clone(),
                        s.message.clone(),
                    ]
                })
                .collect();
            table(&["STEP", "TARGET", "KIND", "ARGS", "STATUS", "MESSAGE"], rows);
        }
    }
    match r.status {
        s if s == v1::ActionStatus::Failed as i32
            || s == v1::ActionStatus::RolledBack as i32
            || s == v1::ActionStatus::FollowUpFailed as i32 =>
        {
            bail!("action {} {status}: {}", r.action_id, r.message)
        }
        _ => Ok(()),
    }
}

fn recommendations(rs: &[v1::ScalingRecommendation], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(Value::Array(
            rs.iter()
                .map(|r| {
                    json!({"set": r.set, "current": r.current, "recommended": r.recommended, "delta": r.delta,
                           "metric": r.metric, "horizon_s": r.horizon_s, "quantile": r.quantile,
                           "predicted_demand": r.predicted_demand,
                           "capacity_per_instance": r.capacity_per_instance, "reason": r.reason})
                })
                .collect(),
        ));
    }
    table(
        &["SET", "CURRENT", "RECOMMENDED", "DELTA", "REASON"],
        rs.iter()
            .map(|r| {
                vec![
                    r.set.clone(),
                    r.current.to_string(),
                    r.recommended.to_string(),
                    format!("{:+}", r.delta),
                    r.reason.clone(),
                ]
            })
            .collect(),
    );
    Ok(())
}

fn pending(ps: &[v1::PendingAction], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(Value::Array(
            ps.iter()
                .map(|p| {
                    json!({"action_id": p.action_id, "created_ms": p.created_ms, "deadline_ms": p.deadline_ms,
                           "policy": p.policy, "host": p.host, "resource": p.resource,
                           "failure_type": p.failure_type, "probability": p.probability,
                           "plan": plan_value(&p.plan_json), "reason": p.reason})
                })
                .collect(),
        ));
    }
    table(
        &["ACTION", "CREATED", "DEADLINE", "TARGET", "FAILURE", "P", "PLAN", "REASON"],
        ps.iter()
            .map(|p| {
                let plan = plan_value(&p.plan_json);
                vec![
                    p.action_id.clone(),
                    time(p.created_ms),
                    time(p.deadline_ms),
                    format!("{}/{}", p.host, p.resource),
                    p.failure_type.clone(),
                    format!("{:.2}", p.probability),
                    plan["action"].as_str().unwrap_or("?").to_owned(),
                    p.reason.clone(),
                ]
            })
            .collect(),
    );
    Ok(())
}

fn audit(rs: &[v1::AuditRecord], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(Value::Array(
            rs.iter()
                .map(|r| {
                    json!({"seq": r.seq, "time_ms": r.time_ms, "action_id": r.action_id, "kind": r.kind,
                           "host": r.host, "resource": r.resource, "detail": plan_value(&r.detail_json),
                           "hash": r.hash, "prev_hash": r.prev_hash})
                })
                .collect(),
        ));
    }
    table(
        &["SEQ", "TIME", "ACTION", "KIND", "TARGET", "DETAIL"],
        rs.iter()
            .map(|r| {
                let mut d = r.detail_json.clone();
                if d.len() > 100 {
                    d.truncate(d.floor_char_boundary(97));
                    d.push_str("...");
                }
                vec![
                    r.seq.to_string(),
                    time(r.time_ms),
                    r.action_id.clone(),
                    r.kind.clone(),
                    if r.resource.is_empty() { r.host.clone() } else { format!("{}/{}", r.host, r.resource) },
                    d,
                ]
            })
            .collect(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_host_slash_workload() {
        assert_eq!(split_target("web-01/app").unwrap(), ("web-01".into(), "app".into()));
        for bad in ["web-01", "/app", "web-01/", "a/b/c"] {
            assert!(split_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn action_args_are_name_value_pairs() {
        let a = parse_args(&["memory_max=1GiB".into(), "cpu_max=1.5".into()]).unwrap();
        assert_eq!(a["memory_max"], "1GiB");
        assert_eq!(a.len(), 2);
        assert!(parse_args(&["novalue".into()]).is_err());
        assert!(parse_args(&["=x".into()]).is_err());
    }

    #[test]
    fn failed_and_rolled_back_actions_are_errors_but_dry_runs_are_not() {
        let r = |status: v1::ActionStatus| v1::ActionResult {
            action_id: "a1".into(),
            status: status as i32,
            plan_json: "{\"action\":\"restart\"}".into(),
            steps: vec![],
            message: "m".into(),
            detail_json: String::new(),
        };
        assert!(action_result(&r(v1::ActionStatus::RolledBack), true).is_err());
        assert!(action_result(&r(v1::ActionStatus::Failed), true).is_err());
        assert!(action_result(&r(v1::ActionStatus::DryRun), true).is_ok());
        assert!(action_result(&r(v1::ActionStatus::Succeeded), false).is_ok());
    }
}
