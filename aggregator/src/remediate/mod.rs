//! Remediation: from predictions to actions that agents execute, under policy and safety.
//!
//! Layout (one file per part):
//! - [`audit`]: the append-only, hash-chained audit trail.
//! - [`dispatch`]: commands to connected agents, tracked until their final report.
//! - [`workflow`]: multi-step, multi-host action plans with per-step timeouts and rollback.

pub mod audit;
pub mod dispatch;
pub mod workflow;
