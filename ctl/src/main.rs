//! `augurctl`: command-line client for the augur aggregator.
//!
//! Layout: `main.rs` parses flags and dispatches; [`output`] renders tables and JSON;
//! [`orchestrate`] holds the remediation verbs (remediate, migrate, scale, approve, audit...).
//! Resources are named `HOST` (the host itself) or `HOST/RESOURCE`, e.g.
//! `web-01/container/3f2a9c1b7d4e` or `web-01/cgroup/augur-demo/web`.

mod orchestrate;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use augur_core::time::now_ms;
use augur_proto::v1::{self, predictions_client::PredictionsClient, query_client::QueryClient};
use clap::{Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(name = "augurctl", version, about = "Query the augur aggregator")]
struct Cli {
    /// Aggregator URL.
    #[arg(long, global = true, env = "AUGUR_AGGREGATOR", default_value = "http://127.0.0.1:7461")]
    aggregator: String,
    /// Print JSON (one document) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hosts known to the aggregator.
    Hosts,
    /// Resources of a host (or of every host).
    Resources {
        /// Host id; all hosts when omitted.
        host: Option<String>,
    },
    /// Series of a host or of one of its resources.
    Series {
        /// HOST or HOST/RESOURCE.
        resource: String,
        /// Only this metric.
        #[arg(long)]
        metric: Option<String>,
    },
    /// Samples of a metric over a time range.
    Query {
        /// HOST or HOST/RESOURCE.
        resource: String,
        /// Metric name, e.g. node_memory_MemAvailable_bytes.
        metric: String,
        /// How far back, e.g. 10m, 2h.
        #[arg(long, default_value = "10m")]
        since: String,
        /// Aggregate into steps (e.g. 1m); raw samples when omitted.
        #[arg(long)]
        step: Option<String>,
        /// Only series with this label, as name=value (repeatable).
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
    },
    /// The newest sample of every series of a resource.
    Latest {
        /// HOST or HOST/RESOURCE.
        resource: String,
        #[arg(long)]
        metric: Option<String>,
    },
    /// Quantile forecast of a metric a horizon ahead (counters are forecast as rates).
    Forecast {
        /// HOST or HOST/RESOURCE.
        resource: String,
        /// Metric name, e.g. container_memory_usage_bytes.
        metric: String,
        /// How far ahead, e.g. 15m, 1h, 24h.
        #[arg(long, default_value = "1h")]
        horizon: String,
        /// Quantiles, comma-separated.
        #[arg(long, default_value = "0.1,0.5,0.9")]
        quantiles: String,
        /// Only the series with this label, as name=value (repeatable).
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
    },
    /// The newest failure predictions of a resource (HOST, HOST/RESOURCE or HOST/fs:MOUNT).
    Predict { resource: String },
    /// Prediction events; with --follow, keep streaming (one JSON object per line with --json).
    Events {
        /// Keep the stream open and print events as they come.
        #[arg(long)]
        follow: bool,
        /// Only events with at least this probability.
        #[arg(long, default_value_t = 0.0)]
        min_prob: f64,
        /// Only resources starting with this (repeatable).
        #[arg(long)]
        resource: Vec<String>,
        /// Only this failure type (repeatable), e.g. memory_exhaustion.
        #[arg(long)]
        failure_type: Vec<String>,
        /// Only hosts with this label, as name=value (repeatable).
        #[arg(long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
        /// Also print every routine per-tick prediction.
        #[arg(long)]
        every_tick: bool,
        /// Without --follow: how long to listen before exiting.
        #[arg(long, default_value = "10s")]
        wait: String,
    },
    #[command(flatten)]
    Orchestrate(orchestrate::OrchestrateCmd),
}

/// Splits `HOST[/RESOURCE]`.
fn split_resource(s: &str) -> anyhow::Result<(String, String)> {
    let (host, res) = match s.split_once('/') {
        Some((h, r)) => (h, r),
        None => (s, ""),
    };
    if host.is_empty() {
        bail!("resource {s:?} must start with a host id (HOST or HOST/RESOURCE)");
    }
    Ok((host.to_owned(), res.to_owned()))
}

fn parse_duration(s: &str, what: &str) -> anyhow::Result<Duration> {
    augur_core::units::parse_duration(s).with_context(|| format!("--{what}"))
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid aggregator URL {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the aggregator at {url}"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ch = channel(&cli.aggregator).await?;
    let mut c = QueryClient::new(ch.clone()).max_decoding_message_size(256 << 20);
    let mut p = PredictionsClient::new(ch.clone());
    let json = cli.json;
    match cli.cmd {
        Cmd::Orchestrate(o) => orchestrate::run(ch, o, json).await,
        Cmd::Forecast { resource, metric, horizon, quantiles, labels } => {
            let horizon = parse_duration(&horizon, "horizon")?;
            let quantiles = quantiles
                .split(',')
                .map(|q| q.trim().parse::<f64>().with_context(|| format!("--quantiles: {q:?} is not a number")))
                .collect::<anyhow::Result<Vec<f64>>>()?;
            let mut match_labels = std::collections::HashMap::new();
            for l in labels {
                let (k, v) = l.split_once('=').with_context(|| format!("--label {l:?} must be NAME=VALUE"))?;
                match_labels.insert(k.to_owned(), v.to_owned());
            }
            let req =
                v1::ForecastRequest { resource, metric, match_labels, horizon_s: horizon.as_secs() as i64, quantiles };
            let r = p.forecast(req).await?.into_inner();
            output::forecast(&r, json)
        }
        Cmd::Predict { resource } => {
            let r = p.predict_failure(v1::PredictFailureRequest { resource }).await?.into_inner();
            output::predictions(&r.predictions, json)
        }
        Cmd::Events { follow, min_prob, resource, failure_type, labels, every_tick, wait } => {
            if !(0.0..=1.0).contains(&min_prob) {
                bail!("--min-prob must be between 0 and 1");
            }
            let wait = parse_duration(&wait, "wait")?;
            let mut host_labels = std::collections::HashMap::new();
            for l in labels {
                let (k, v) = l.split_once('=').with_context(|| format!("--label {l:?} must be NAME=VALUE"))?;
                host_labels.insert(k.to_owned(), v.to_owned());
            }
            let req = v1::SubscribeRequest {
                resource_prefixes: resource,
                host_labels,
                failure_types: failure_type,
                min_probability: min_prob,
                every_tick,
            };
            let mut stream = p.subscribe(req).await?.into_inner();
            let deadline = tokio::time::Instant::now() + wait;
            output::event_header(json);
            loop {
                let next = if follow {
                    stream.message().await?
                } else {
                    match tokio::time::timeout_at(deadline, stream.message()).await {
                        Ok(m) => m?,
                        Err(_) => break,
                    }
                };
                let Some(ev) = next else { break };
                output::event(&ev, json)?;
            }
            Ok(())
        }
        Cmd::Hosts => {
            let r = c.list_hosts(v1::ListHostsRequest {}).await?.into_inner();
            output::hosts(&r.hosts, json)
        }
        Cmd::Resources { host } => {
            let r =
                c.list_resources(v1::ListResourcesRequest { host_id: host.unwrap_or_default() }).await?.into_inner();
            output::resources(&r.resources, json)
        }
        Cmd::Series { resource, metric } => {
            let (host_id, resource) = split_resource(&resource)?;
            let r = c
                .list_series(v1::ListSeriesRequest { host_id, resource, metric: metric.unwrap_or_default() })
                .await?
                .into_inner();
            output::series(&r.series, json)
        }
        Cmd::Query { resource, metric, since, step, labels } => {
            let (host_id, mut resource) = split_resource(&resource)?;
            if resource.is_empty() {
                resource = augur_core::series::HOST_RESOURCE.to_owned();
            }
            let since = parse_duration(&since, "since")?;
            let step_ms = match step {
                Some(s) => parse_duration(&s, "step")?.as_millis() as i64,
                None => 0,
            };
            let mut match_labels = std::collections::HashMap::new();
            for l in labels {
                let (k, v) = l.split_once('=').with_context(|| format!("--label {l:?} must be NAME=VALUE"))?;
                match_labels.insert(k.to_owned(), v.to_owned());
            }
            let end = now_ms() + 1;
            let req = v1::QueryRangeRequest {
                host_id,
                resource,
                metric,
                match_labels,
                start_ms: end - since.as_millis() as i64,
                end_ms: end,
                step_ms,
            };
            let r = c.query_range(req).await?.into_inner();
            output::range(&r.series, json)
        }
        Cmd::Latest { resource, metric } => {
            let (host_id, resource) = split_resource(&resource)?;
            let r = c
                .latest(v1::LatestRequest { host_id, resource, metric: metric.unwrap_or_default() })
                .await?
                .into_inner();
            output::latest(&r.series, json)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("augurctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(s) = e.downcast_ref::<tonic::Status>() {
                eprintln!("augurctl: {:?}: {}", s.code(), s.message());
            } else {
                eprintln!("augurctl: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_split_on_first_slash() {
        assert_eq!(split_resource("web-01").unwrap(), ("web-01".into(), "".into()));
        assert_eq!(
            split_resource("web-01/cgroup/augur-demo/web").unwrap(),
            ("web-01".into(), "cgroup/augur-demo/web".into())
        );
        assert!(split_resource("/container/x").is_err());
    }
}
