//! The one JSON line a bench prints last: an object whose keys keep the order they
//! were added in (`bench` first), which `serde_json::Map` would sort.

use std::fmt;

use serde_json::Value;

/// An ordered JSON object.
#[derive(Debug, Clone, Default)]
pub struct Report(Vec<(&'static str, Value)>);

impl Report {
    /// A report of the bench `name`.
    pub fn new(name: &str) -> Self {
        Report(vec![("bench", Value::from(name))])
    }

    /// Adds a field (builder style). Non-finite floats become `null`.
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.0.push((key, value.into()));
        self
    }

    /// A field's value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{v}", Value::from(*k))?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_and_the_line_is_json() {
        let r = Report::new("ingest").with("zeta", 1.5).with("alpha", 3u64).with("nan", f64::NAN).with("s", "a\"b");
        let line = r.to_string();
        assert_eq!(line, r#"{"bench":"ingest","zeta":1.5,"alpha":3,"nan":null,"s":"a\"b"}"#);
        let back: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(back["alpha"], 3);
    }
}
