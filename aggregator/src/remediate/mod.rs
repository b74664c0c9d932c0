//! Remediation: from predictions to actions that agents execute, under policy and safety.
//!
//! Layout (one file per part):
//! - [`workflow`]: multi-step, multi-host action plans with per-step timeouts and rollback.

pub mod workflow;
