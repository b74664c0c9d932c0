//! Conversions between wire messages and the domain types of `augur-core`.

use augur_core::command::{CommandError, CommandSpec, Envelope};
use augur_core::{MetricKind, SeriesKey};

use crate::v1;

/// Domain kind of a wire kind; `None` for values this build does not know.
pub fn kind_from_wire(k: i32) -> Option<MetricKind> {
    match v1::MetricKind::try_from(k) {
        Ok(v1::MetricKind::Gauge) => Some(MetricKind::Gauge),
        Ok(v1::MetricKind::Counter) => Some(MetricKind::Counter),
        _ => None,
    }
}

/// Wire value of a domain kind.
pub fn kind_to_wire(k: MetricKind) -> i32 {
    match k {
        MetricKind::Gauge => v1::MetricKind::Gauge as i32,
        MetricKind::Counter => v1::MetricKind::Counter as i32,
    }
}

fn key(
    resource: &str,
    metric: &str,
    unit: &str,
    kind: i32,
    labels: &std::collections::HashMap<String, String>,
) -> SeriesKey {
    SeriesKey {
        resource: resource.to_owned(),
        metric: metric.to_owned(),
        unit: unit.to_owned(),
        kind: kind_from_wire(kind).unwrap_or_default(),
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// The series key a definition names (an unknown kind reads as a gauge; check it with
/// [`kind_from_wire`] where that matters).
pub fn key_of_def(d: &v1::SeriesDef) -> SeriesKey {
    key(&d.resource, &d.metric, &d.unit, d.kind, &d.labels)
}

/// The series key of a query answer's series.
pub fn key_of_info(s: &v1::SeriesInfo) -> SeriesKey {
    key(&s.resource, &s.metric, &s.unit, s.kind, &s.labels)
}

/// A definition of `key` under reference `r`.
pub fn def_of(r: u32, key: &SeriesKey) -> v1::SeriesDef {
    v1::SeriesDef {
        r#ref: r,
        resource: key.resource.clone(),
        metric: key.metric.clone(),
        unit: key.unit.clone(),
        kind: kind_to_wire(key.kind),
        labels: key.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// Query-side description of `key` on `host`.
pub fn info_of(host: &str, key: &SeriesKey) -> v1::SeriesInfo {
    v1::SeriesInfo {
        host_id: host.to_owned(),
        resource: key.resource.clone(),
        metric: key.metric.clone(),
        unit: key.unit.clone(),
        kind: kind_to_wire(key.kind),
        labels: key.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// The wire form of a typed command.
pub fn command_of(e: &Envelope) -> v1::Command {
    v1::Command {
        id: e.id.clone(),
        idempotency_key: e.idempotency_key.clone(),
        target_host: e.target_host.clone(),
        deadline_ms: e.deadline_ms,
        kind: e.spec.kind().to_owned(),
        args: e.spec.to_args().into_iter().collect(),
        dry_run: e.dry_run,
        resource: e.resource.clone(),
    }
}

/// The typed form of a wire command. An empty `id` or `target_host` is refused; an empty
/// `idempotency_key` becomes the id (the command is then applied once per id).
pub fn envelope_of(c: &v1::Command) -> Result<Envelope, CommandError> {
    if c.id.is_empty() {
        return Err(CommandError::Missing { kind: "command", arg: "id" });
    }
    if c.target_host.is_empty() {
        return Err(CommandError::Missing { kind: "command", arg: "target_host" });
    }
    let spec = CommandSpec::from_args(&c.kind, &c.args)?;
    Ok(Envelope {
        id: c.id.clone(),
        idempotency_key: if c.idempotency_key.is_empty() { c.id.clone() } else { c.idempotency_key.clone() },
        target_host: c.target_host.clone(),
        resource: c.resource.clone(),
        deadline_ms: c.deadline_ms,
        dry_run: c.dry_run,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_defs_and_infos() {
        let k = SeriesKey::new("container/abc", "container_cpu_usage_seconds_total", "seconds", MetricKind::Counter)
            .with_label("cpu", "0");
        assert_eq!(key_of_def(&def_of(7, &k)), k);
        assert_eq!(def_of(7, &k).r#ref, 7);
        let info = info_of("h1", &k);
        assert_eq!((info.host_id.as_str(), key_of_info(&info)), ("h1", k));
    }

    #[test]
    fn unknown_kinds_are_reported() {
        assert_eq!(kind_from_wire(99), None);
        assert_eq!(kind_from_wire(0), None);
        assert_eq!(kind_from_wire(2), Some(MetricKind::Counter));
    }

    #[test]
    fn commands_round_trip_through_the_wire() {
        use augur_core::command::{Resize, ServerState, TrafficChange};
        for spec in [
            CommandSpec::Resize(Resize { memory_max: Some(64 << 20), memory_high: None, cpu_max: Some(0.5) }),
            CommandSpec::Traffic {
                backend: "app".into(),
                server: "a".into(),
                change: TrafficChange::State { state: ServerState::Drain },
            },
            CommandSpec::Rollback { command_id: "c-1".into() },
        ] {
            let e = Envelope {
                id: "c-2".into(),
                idempotency_key: "k-2".into(),
                target_host: "h1".into(),
                resource: "web".into(),
                deadline_ms: 1_700_000_000_000,
                dry_run: true,
                spec,
            };
            assert_eq!(envelope_of(&command_of(&e)), Ok(e));
        }
    }

    #[test]
    fn wire_commands_without_id_or_host_are_refused_and_key_defaults_to_id() {
        let mut c =
            v1::Command { id: "c-1".into(), target_host: "h1".into(), kind: "restart".into(), ..Default::default() };
        assert_eq!(envelope_of(&c).expect("valid").idempotency_key, "c-1");
        c.kind = "reboot".into();
        assert_eq!(envelope_of(&c), Err(CommandError::UnknownKind("reboot".into())));
        c.kind = "restart".into();
        c.target_host.clear();
        assert!(envelope_of(&c).expect_err("no host").to_string().contains("target_host"));
        c.target_host = "h1".into();
        c.id.clear();
        assert!(envelope_of(&c).expect_err("no id").to_string().contains("\"id\""));
    }
}
