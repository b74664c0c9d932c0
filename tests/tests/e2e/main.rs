//! End-to-end tests: one binary, one module per area.

mod failover;
mod migration;
mod netlab;
mod pipeline;
mod predict;
mod remediate_oom;
mod safety;
mod scale;
mod units;
