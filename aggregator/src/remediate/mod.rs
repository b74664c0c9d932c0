//! Remediation: from predictions to actions that agents execute, under policy and safety.
//!
//! Layout (one file per part):
//! - [`audit`]: the append-only, hash-chained audit trail.
//! - [`dispatch`]: commands to connected agents, tracked until their final report.
//! - [`decide`]: the decision loop: prediction events to plans by policy mode, under safety.
//! - [`policy`]: the `[remediation]` config: sets, tiers, SLAs, policies, the knowledge base.
//! - [`safety`]: blast-radius limits: concurrency, cooldown, halt, empty or unknown targets.
//! - [`bandit`]: Thompson sampling over (failure type, action) from verified outcomes.
//! - [`thresholds`]: per (resource kind, failure type, owner) thresholds adapted to misses and false positives.
//! - [`placement`]: in-place headroom, tier choice by cost and SLA.
//! - [`outcome`]: warnings, failures and action verification; live precision and recall.
//! - [`workflow`]: multi-step, multi-host action plans with per-step timeouts and rollback.

pub mod audit;
pub mod bandit;
pub mod decide;
pub mod dispatch;
pub mod outcome;
pub mod placement;
pub mod policy;
pub mod safety;
pub mod thresholds;
pub mod workflow;
