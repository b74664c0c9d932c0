//! `augur-bench export`: copies the recent raw data of one host out of a running
//! aggregator (Query.ListSeries, then one raw Query.QueryRange per resource and
//! metric) into a [`Recording`] file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use augur_core::{MetricKind, SeriesKey};
use augur_proto::v1::{self, query_client::QueryClient};
use tonic::transport::{Channel, Endpoint};

use crate::procs::round;
use crate::recording::{RecordedSeries, Recording};
use crate::report::Report;

/// Connects a Query client to `url`.
pub async fn query_client(url: &str) -> anyhow::Result<QueryClient<Channel>> {
    let channel = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad aggregator URL {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(QueryClient::new(channel).max_decoding_message_size(256 << 20))
}

fn key_of(s: &v1::SeriesInfo) -> SeriesKey {
    SeriesKey {
        resource: s.resource.clone(),
        metric: s.metric.clone(),
        unit: s.unit.clone(),
        kind: match v1::MetricKind::try_from(s.kind) {
            Ok(v1::MetricKind::Counter) => MetricKind::Counter,
            _ => MetricKind::Gauge,
        },
        labels: s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// Reads every series of `host` over the last `since` into a recording.
pub async fn fetch(url: &str, host: &str, since: Duration) -> anyhow::Result<Recording> {
    let mut client = query_client(url).await?;
    let listed = client
        .list_series(v1::ListSeriesRequest { host_id: host.to_owned(), resource: String::new(), metric: String::new() })
        .await
        .context("ListSeries")?
        .into_inner()
        .series;
    anyhow::ensure!(!listed.is_empty(), "the aggregator has no series for host {host:?}");
    let end_ms = augur_core::time::now_ms();
    let start_ms = end_ms - since.as_millis() as i64;
    // One raw query per (resource, metric) returns all its label sets at once.
    let mut wanted: BTreeMap<(String, String), Vec<SeriesKey>> = BTreeMap::new();
    for s in &listed {
        wanted.entry((s.resource.clone(), s.metric.clone())).or_default().push(key_of(s));
    }
    eprintln!(
        "export: {} series in {} (resource, metric) groups, {} s of data",
        listed.len(),
        wanted.len(),
        since.as_secs()
    );
    let mut series = Vec::with_capacity(listed.len());
    for ((resource, metric), keys) in wanted {
        let resp = client
            .query_range(v1::QueryRangeRequest {
                host_id: host.to_owned(),
                resource: resource.clone(),
                metric: metric.clone(),
                match_labels: Default::default(),
                start_ms,
                end_ms,
                step_ms: 0,
            })
            .await
            .with_context(|| format!("QueryRange {resource} {metric}"))?
            .into_inner();
        let mut by_key: BTreeMap<SeriesKey, Vec<(i64, f64)>> = resp
            .series
            .into_iter()
            .filter_map(|d| {
                let info = d.series?;
                let pts = d.points.iter().map(|p| (p.timestamp_ms, p.value)).collect();
                Some((key_of(&info), pts))
            })
            .collect();
        for key in keys {
            let points = by_key.remove(&key).unwrap_or_default();
            series.push(RecordedSeries { key, points });
        }
    }
    series.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Recording { host_id: host.to_owned(), start_ms, end_ms, series })
}

/// Runs the export and reports what was written.
pub fn run(url: &str, host: &str, since: Duration, out: &Path) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let rec = rt.block_on(fetch(url, host, since))?;
    let empty = rec.series.iter().filter(|s| s.points.is_empty()).count();
    let raw = rec.encode().len();
    let bytes = rec.save(out)?;
    let samples = rec.samples();
    eprintln!(
        "export: wrote {} ({} series, {empty} without points in range, {samples} samples, \
         {raw} bytes before gzip, {bytes} after)",
        out.display(),
        rec.series.len()
    );
    Ok(Report::new("export")
        .with("file", out.display().to_string())
        .with("file_bytes", bytes)
        .with("series", rec.series.len())
        .with("samples", samples)
        .with("bytes_per_sample", round(bytes as f64 / samples.max(1) as f64, 3)))
}
