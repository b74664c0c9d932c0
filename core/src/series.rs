//! Series identity: a resource, a metric name in Prometheus conventions, a unit and
//! extra labels. Two samples belong to the same series exactly when their keys are equal.

use std::collections::BTreeMap;
use std::fmt;

/// Whether a series is a gauge or a cumulative counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MetricKind {
    #[default]
    Gauge,
    /// Cumulative and monotonically increasing, except when the source resets.
    Counter,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        }
    }
}

/// The resource name of the host itself.
pub const HOST_RESOURCE: &str = "host";

/// Identity of one time series on one host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// `host`, or `container/<id-or-name>`, `pod/<ns>/<pod>/<container>`,
    /// `service/<unit>`, `cgroup/<path>`.
    pub resource: String,
    /// Prometheus-style name in base units (`node_memory_available_bytes`).
    pub metric: String,
    /// Base unit: `bytes`, `seconds`, `ratio`, `count`, `packets`, `celsius`, … .
    pub unit: String,
    pub kind: MetricKind,
    /// Extra dimensions such as `mode` or `device`, sorted by name.
    pub labels: BTreeMap<String, String>,
}

impl SeriesKey {
    /// A key without labels.
    pub fn new(resource: &str, metric: &str, unit: &str, kind: MetricKind) -> Self {
        SeriesKey {
            resource: resource.to_owned(),
            metric: metric.to_owned(),
            unit: unit.to_owned(),
            kind,
            labels: BTreeMap::new(),
        }
    }

    /// Adds one label (builder style).
    pub fn with_label(mut self, name: &str, value: &str) -> Self {
        self.labels.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Checks the key's fields are well formed; the aggregator calls this on every
    /// definition it receives.
    pub fn validate(&self) -> Result<(), SeriesKeyError> {
        if self.resource.is_empty() || self.resource.len() > MAX_RESOURCE_LEN {
            return Err(SeriesKeyError::Resource(self.resource.len()));
        }
        if !is_valid_metric_name(&self.metric) {
            return Err(SeriesKeyError::MetricName(self.metric.clone()));
        }
        if self.unit.len() > MAX_NAME_LEN {
            return Err(SeriesKeyError::Unit(self.unit.len()));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(SeriesKeyError::TooManyLabels(self.labels.len()));
        }
        for (k, v) in &self.labels {
            if !is_valid_label_name(k) {
                return Err(SeriesKeyError::LabelName(k.clone()));
            }
            if v.len() > MAX_LABEL_VALUE_LEN {
                return Err(SeriesKeyError::LabelValue(k.clone(), v.len()));
            }
        }
        if self.resource.chars().any(|c| c.is_control()) {
            return Err(SeriesKeyError::Resource(self.resource.len()));
        }
        Ok(())
    }
}

impl fmt::Display for SeriesKey {
    /// `resource:metric{label="v",…}`, the form augurctl prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.metric)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v:?}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

pub const MAX_RESOURCE_LEN: usize = 512;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_LABELS: usize = 16;
pub const MAX_LABEL_VALUE_LEN: usize = 512;

/// Why a series key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesKeyError {
    #[error("resource name must be 1..={MAX_RESOURCE_LEN} printable bytes (got {0} bytes)")]
    Resource(usize),
    #[error("metric name {0:?} is not of the form [a-zA-Z_:][a-zA-Z0-9_:]* (at most {MAX_NAME_LEN} bytes)")]
    MetricName(String),
    #[error("unit is longer than {MAX_NAME_LEN} bytes ({0})")]
    Unit(usize),
    #[error("too many labels ({0}, at most {MAX_LABELS})")]
    TooManyLabels(usize),
    #[error("label name {0:?} is not of the form [a-zA-Z_][a-zA-Z0-9_]*")]
    LabelName(String),
    #[error("value of label {0:?} is longer than {MAX_LABEL_VALUE_LEN} bytes ({1})")]
    LabelValue(String, usize),
}

/// Prometheus metric name rule.
pub fn is_valid_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Prometheus label name rule.
pub fn is_valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_prometheus_rules() {
        assert!(is_valid_metric_name("node_memory_available_bytes"));
        assert!(is_valid_metric_name("job:rate5m"));
        assert!(!is_valid_metric_name(""));
        assert!(!is_valid_metric_name("9lives"));
        assert!(!is_valid_metric_name("with space"));
        assert!(!is_valid_metric_name("dash-ed"));
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let ok = SeriesKey::new("host", "node_load1", "ratio", MetricKind::Gauge);
        assert_eq!(ok.validate(), Ok(()));
        let mut k = ok.clone();
        k.resource.clear();
        assert!(matches!(k.validate(), Err(SeriesKeyError::Resource(0))));
        let k = ok.clone().with_label("bad-name", "x");
        assert!(matches!(k.validate(), Err(SeriesKeyError::LabelName(_))));
        let k = ok.clone().with_label("mode", &"x".repeat(MAX_LABEL_VALUE_LEN + 1));
        assert!(matches!(k.validate(), Err(SeriesKeyError::LabelValue(_, _))));
        let mut k = ok;
        k.resource = "a\nb".into();
        assert!(k.validate().is_err());
    }

    #[test]
    fn display_is_stable_and_sorted() {
        let k = SeriesKey::new("host", "node_cpu_seconds_total", "seconds", MetricKind::Counter)
            .with_label("mode", "user")
            .with_label("cpu", "0");
        assert_eq!(k.to_string(), r#"host:node_cpu_seconds_total{cpu="0",mode="user"}"#);
    }
}
