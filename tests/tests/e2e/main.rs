//! End-to-end tests: one binary, one module per area.

mod netlab;
mod pipeline;
mod predict;
mod remediate_oom;
mod safety;
mod units;
