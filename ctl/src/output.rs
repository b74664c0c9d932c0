//! Rendering: aligned tables for people, JSON for scripts.

use augur_proto::v1;
use serde_json::{Value, json};

pub(crate) fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.6}") }
}

/// Prints rows with columns padded to the widest cell.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn labels_str(l: &std::collections::HashMap<String, String>) -> String {
    let mut v: Vec<_> = l.iter().collect();
    v.sort();
    v.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn series_json(s: &v1::SeriesInfo) -> Value {
    json!({"host_id": s.host_id, "resource": s.resource, "metric": s.metric, "unit": s.unit,
           "kind": if s.kind == v1::MetricKind::Counter as i32 { "counter" } else { "gauge" },
           "labels": s.labels})
}

pub(crate) fn print_json(v: Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub fn hosts(h: &[v1::HostInfo], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(Value::Array(
            h.iter()
                .map(|h| {
                    json!({"host_id": h.host_id, "connected": h.connected, "labels": h.labels,
                    "agent_version": h.agent_version, "capabilities": h.capabilities,
                    "first_seen_ms": h.first_seen_ms, "last_seen_ms": h.last_seen_ms,
                    "incarnation": h.incarnation, "acked_sequence": h.acked_sequence,
                    "samples_stored": h.samples_stored, "samples_rejected": h.samples_rejected,
                    "batches_lost": h.batches_lost, "series": h.series})
                })
                .collect(),
        ));
    }
    table(
        &["HOST", "CONNECTED", "AGENT", "SERIES", "STORED", "REJECTED", "LOST", "LAST SEEN", "LABELS"],
        h.iter()
            .map(|h| {
                vec![
                    h.host_id.clone(),
                    if h.connected { "yes" } else { "no" }.into(),
                    h.agent_version.clone(),
                    h.series.to_string(),
                    h.samples_stored.to_string(),
                    h.samples_rejected.to_string(),
                    h.batches_lost.to_string(),
                    time(h.last_seen_ms),
                    labels_str(&h.labels),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub fn resources(r: &[v1::ResourceInfo], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(Value::Array(
            r.iter()
                .map(|r| json!({"host_id": r.host_id, "resource": r.resource, "series": r.series, "last_sample_ms": r.last_sample_ms}))
                .collect(),
        ));
    }
    table(
        &["HOST", "RESOURCE", "SERIES", "LAST SAMPLE"],
        r.iter()
            .map(|r| vec![r.host_id.clone(), r.resource.clone(), r.series.to_string(), time(r.last_sample_ms)])
            .collect(),
    );
    Ok(())
}

pub fn series(s: &[v1::SeriesInfo], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(Value::Array(s.iter().map(series_json).collect()));
    }
    table(
        &["RESOURCE", "METRIC", "UNIT", "KIND", "LABELS"],
        s.iter()
            .map(|s| {
                vec![
                    s.resource.clone(),
                    s.metric.clone(),
                    s.unit.clone(),
                    if s.kind == v1::MetricKind::Counter as i32 { "counter" } else { "gauge" }.into(),
                    labels_str(&s.labels),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub fn range(data: &[v1::SeriesData], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(Value::Array(
            data.iter()
                .map(|d| {
                    json!({
                        "series": d.series.as_ref().map(series_json),
                        "points": d.points.iter().map(|p| json!([p.timestamp_ms, p.value])).collect::<Vec<_>>(),
                        "rollups": d.rollups.iter().map(|r| json!({"timestamp_ms": r.timestamp_ms, "min": r.min,
                            "max": r.max, "avg": r.avg, "last": r.last, "count": r.count})).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ));
    }
    if data.is_empty() {
        println!("no matching series");
    }
    for d in data {
        if let Some(s) = &d.series {
            println!("# {} {} {{{}}} [{}]", s.resource, s.metric, labels_str(&s.labels), s.unit);
        }
        if !d.rollups.is_empty() {
            table(
                &["TIME", "MIN", "AVG", "MAX", "LAST", "COUNT"],
                d.rollups
                    .iter()
                    .map(|r| {
                        vec![time(r.timestamp_ms), num(r.min), num(r.avg), num(r.max), num(r.last), r.count.to_string()]
                    })
                    .collect(),
            );
        } else {
            table(&["TIME", "VALUE"], d.points.iter().map(|p| vec![time(p.timestamp_ms), num(p.value)]).collect());
        }
        println!();
    }
    Ok(())
}

pub fn latest(data: &[v1::SeriesData], json: bool) -> anyhow::Result<()> {
    if json {
        return range(data, true);
    }
    table(
        &["RESOURCE", "METRIC", "LABELS", "VALUE", "UNIT", "TIME"],
        data.iter()
            .filter_map(|d| {
                let s = d.series.as_ref()?;
                let p = d.points.first();
                Some(vec![
                    s.resource.clone(),
                    s.metric.clone(),
                    labels_str(&s.labels),
                    p.map(|p| num(p.value)).unwrap_or_else(|| "-".into()),
                    s.unit.clone(),
                    p.map(|p| time(p.timestamp_ms)).unwrap_or_else(|| "-".into()),
                ])
            })
            .collect(),
    );
    Ok(())
}

fn state_str(s: i32) -> &'static str {
    match v1::EventState::try_from(s) {
        Ok(v1::EventState::Raised) => "RAISED",
        Ok(v1::EventState::Updated) => "UPDATED",
        Ok(v1::EventState::Cleared) => "CLEARED",
        Ok(v1::EventState::Tick) => "TICK",
        _ => "?",
    }
}

fn event_json(e: &v1::PredictionEvent) -> Value {
    let mut by_h: Vec<(i64, f64)> = e.probability_by_horizon_s.iter().map(|(h, p)| (*h, *p)).collect();
    by_h.sort_by_key(|x| x.0);
    json!({
        "id": e.id, "time_ms": e.time_ms, "host_id": e.host_id, "resource": e.resource,
        "resource_kind": e.resource_kind, "failure_type": e.failure_type, "state": state_str(e.state),
        "probability": e.probability, "horizon_s": e.horizon_s,
        "probability_by_horizon_s": by_h.iter().map(|(h, p)| json!({"horizon_s": h, "probability": p})).collect::<Vec<_>>(),
        "expected_time_to_failure_s": e.expected_time_to_failure_s,
        "top_features": e.top_features.iter().map(|f| json!({"name": f.name, "value": f.value, "contribution": f.contribution})).collect::<Vec<_>>(),
        "model": e.model.as_ref().map(|m| json!({"name": m.name, "version": m.version})),
        "dropped_before": e.dropped_before, "summary": e.summary,
    })
}

fn why(e: &v1::PredictionEvent) -> String {
    let top: Vec<String> = e.top_features.iter().map(|f| format!("{}={}", f.name, num(f.value))).collect();
    match (e.summary.is_empty(), top.is_empty()) {
        (false, false) => format!("{} [{}]", e.summary, top.join(" ")),
        (false, true) => e.summary.clone(),
        (true, _) => top.join(" "),
    }
}

/// Column titles for streamed events (tables only).
pub fn event_header(json: bool) {
    if !json {
        println!("TIME                      STATE    RESOURCE  FAILURE  P  HORIZON  WHY");
    }
}

/// One streamed event: a line of text, or one JSON object per line.
pub fn event(e: &v1::PredictionEvent, json: bool) -> anyhow::Result<()> {
    if e.dropped_before > 0 {
        eprintln!("augurctl: {} events were dropped before this one (reading too slowly)", e.dropped_before);
    }
    if json {
        println!("{}", serde_json::to_string(&event_json(e))?);
    } else {
        println!(
            "{}  {}  {}  {}  {:.3}  {}s  {}",
            time(e.time_ms),
            state_str(e.state),
            e.resource,
            e.failure_type,
            e.probability,
            e.horizon_s,
            why(e)
        );
    }
    Ok(())
}

/// A quantile forecast.
pub fn forecast(f: &v1::ForecastResponse, json: bool) -> anyhow::Result<()> {
    let s = f.series.as_ref();
    if json {
        return print_json(json!({
            "series": s.map(series_json), "model": f.model, "horizon_s": f.horizon_s, "step_s": f.step_s,
            "target_ms": f.target_ms, "rate": f.rate, "cv_pinball": f.cv_pinball,
            "history_points": f.history_points, "filled_points": f.filled_points,
            "quantiles": f.quantiles.iter().map(|q| json!({"quantile": q.quantile, "value": q.value})).collect::<Vec<_>>(),
        }));
    }
    let unit = s.map(|s| s.unit.clone()).unwrap_or_default();
    let unit = if f.rate { format!("{unit}/s") } else { unit };
    println!(
        "{} {}{} in {}s (at {}): model {}, cross-validated pinball loss {}, {} points of history at {}s",
        s.map(|s| s.resource.as_str()).unwrap_or("-"),
        s.map(|s| s.metric.as_str()).unwrap_or("-"),
        if f.rate { " (rate)" } else { "" },
        f.horizon_s,
        time(f.target_ms),
        f.model,
        num(f.cv_pinball),
        f.history_points,
        f.step_s
    );
    table(
        &["QUANTILE", "VALUE", "UNIT"],
        f.quantiles.iter().map(|q| vec![format!("p{}", num(q.quantile * 100.0)), num(q.value), unit.clone()]).collect(),
    );
    Ok(())
}

/// The newest predictions of a resource.
pub fn predictions(p: &[v1::PredictionEvent], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(Value::Array(p.iter().map(event_json).collect()));
    }
    table(
        &["RESOURCE", "FAILURE", "P", "HORIZON", "BY HORIZON", "MODEL", "WHY"],
        p.iter()
            .map(|e| {
                let mut by_h: Vec<(i64, f64)> = e.probability_by_horizon_s.iter().map(|(h, p)| (*h, *p)).collect();
                by_h.sort_by_key(|x| x.0);
                vec![
                    e.resource.clone(),
                    e.failure_type.clone(),
                    format!("{:.3}", e.probability),
                    format!("{}s", e.horizon_s),
                    by_h.iter().map(|(h, p)| format!("{h}s:{p:.2}")).collect::<Vec<_>>().join(" "),
                    e.model.as_ref().map(|m| format!("{}@{}", m.name, m.version)).unwrap_or_default(),
                    why(e),
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
    fn times_render_in_utc() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_700_000_000_123), "2023-11-14 22:13:20.123Z");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00.000Z");
    }

    #[test]
    fn numbers_render_compactly() {
        assert_eq!(num(42.0), "42");
        assert_eq!(num(0.5), "0.500000");
    }
}
