//! Remediation: from predictions to actions that agents execute, under policy and safety.
//!
//! Layout (one file per part):
