//! systemd units: `systemctl restart|start|stop UNIT` (template units `name@.service` get
//! the command's instance), and resize through `systemctl set-property --runtime UNIT
//! MemoryMax= MemoryHigh= CPUQuota=` (runtime only: a reboot forgets it).
//!
//! The previous values come from `systemctl show UNIT -p MemoryMax -p MemoryHigh -p
//! CPUQuotaPerSecUSec` and are set back on undo. Memory values are guarded by the unit's
//! `MemoryCurrent` like cgroup writes are.

use std::time::Duration;

use augur_core::command::Resize;
use augur_core::units::format_bytes;

use super::exec::{Runner, run_checked};
use super::{Plan, Step, StepError};
use crate::workload::LimitsConfig;

const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

/// The unit a command acts on: a template `web@.service` with instance `2` is
/// `web@2.service`; an instance unit `web@1.service` with instance `2` is `web@2.service`.
pub fn instance_unit(unit: &str, instance: Option<&str>) -> Result<String, String> {
    let Some((prefix, rest)) = unit.split_once('@') else {
        return match instance {
            None => Ok(unit.to_owned()),
            Some(i) => Err(format!("unit {unit} is not a template unit (name@.service): instance {i:?} cannot apply")),
        };
    };
    let suffix = rest.rsplit_once('.').map(|(_, s)| s).unwrap_or("service");
    match (rest.split_once('.').map(|(i, _)| i).unwrap_or(rest), instance) {
        ("", None) => Err(format!("unit {unit} is a template: the command needs an instance")),
        (current, None) => Ok(format!("{prefix}@{current}.{suffix}")),
        (_, Some(i)) => Ok(format!("{prefix}@{i}.{suffix}")),
    }
}

/// `systemctl ACTION UNIT`.
pub fn lifecycle_argv(systemctl: &str, action: &str, unit: &str) -> Vec<String> {
    vec![systemctl.into(), action.into(), unit.into()]
}

/// `systemctl set-property --runtime UNIT K=V...`.
pub fn set_property_argv(systemctl: &str, unit: &str, props: &[(String, String)]) -> Vec<String> {
    let mut a = vec![systemctl.to_owned(), "set-property".into(), "--runtime".into(), unit.to_owned()];
    a.extend(props.iter().map(|(k, v)| format!("{k}={v}")));
    a
}

/// `CPUQuota=` value for `cores` (percent of one CPU).
pub fn cpu_quota(cores: f64) -> String {
    format!("{}%", ((cores * 100.0).round() as u64).max(1))
}

/// Parses `systemctl show` output (`Key=Value` lines).
pub fn parse_show(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect()
}

/// `CPUQuotaPerSecUSec` (`infinity`, `1.500000s`, `500ms`) as cores; `None` for no quota.
pub fn parse_quota_per_sec(v: &str) -> Result<Option<f64>, String> {
    let v = v.trim();
    if v == "infinity" || v.is_empty() {
        return Ok(None);
    }
    let secs = if let Some(n) = v.strip_suffix("ms") {
        n.parse::<f64>().map(|x| x / 1e3)
    } else if let Some(n) = v.strip_suffix("us") {
        n.parse::<f64>().map(|x| x / 1e6)
    } else if let Some(n) = v.strip_suffix('s') {
        n.parse::<f64>()
    } else {
        v.parse::<f64>()
    };
    secs.map(Some).map_err(|_| format!("unexpected CPUQuotaPerSecUSec {v:?}"))
}

async fn show(
    runner: &dyn Runner,
    systemctl: &str,
    unit: &str,
    props: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut argv = vec![systemctl.to_owned(), "show".into(), unit.to_owned()];
    for p in props {
        argv.push("-p".into());
        argv.push((*p).into());
    }
    let out = run_checked(runner, &argv, SHOW_TIMEOUT).await?;
    Ok(parse_show(&out.stdout))
}

fn memory_prop(v: &str) -> Option<u64> {
    v.parse().ok()
}

/// Plan of a resize through systemd.
pub async fn plan_resize(
    runner: &dyn Runner,
    systemctl: &str,
    unit: &str,
    r: &Resize,
    limits: &LimitsConfig,
) -> Result<Plan, String> {
    let unit = instance_unit(unit, None)?;
    let cur = show(runner, systemctl, &unit, &["MemoryMax", "MemoryHigh", "CPUQuotaPerSecUSec", "MemoryCurrent"])
        .await
        .map_err(|e| format!("cannot read the unit's current limits: {e}"))?;
    let get = |k: &str| cur.get(k).cloned().unwrap_or_else(|| "infinity".into());
    let mut plan = Plan { health_check: true, ..Plan::default() };
    plan.details.insert("unit".into(), unit.clone());
    let mut props = Vec::new();
    let mut undo = Vec::new();
    let usage = cur.get("MemoryCurrent").and_then(|v| memory_prop(v));
    for (arg, prop, value) in [("memory_max", "MemoryMax", r.memory_max), ("memory_high", "MemoryHigh", r.memory_high)]
    {
        let Some(v) = value else { continue };
        if limits.memory_max > 0 && v > limits.memory_max {
            return Err(format!(
                "{arg} {} is above this workload's cap limits.memory_max {}",
                format_bytes(v),
                format_bytes(limits.memory_max)
            ));
        }
        match usage {
            Some(u) if v < u.saturating_add(limits.memory_margin) => {
                return Err(format!(
                    "refusing {arg}: {} is below current usage {} + margin {} (would force reclaim or an OOM kill)",
                    format_bytes(v),
                    format_bytes(u),
                    format_bytes(limits.memory_margin)
                ));
            }
            Some(_) => {}
            None if memory_prop(&get(prop)).is_none_or(|prev| v < prev) => {
                return Err(format!("refusing {arg}: the unit's memory usage is unknown, so a lower limit is unsafe"));
            }
            None => {}
        }
        let prev = get(prop);
        plan.details.insert(format!("previous.{arg}"), if prev == "infinity" { "max".into() } else { prev.clone() });
        props.push((prop.to_owned(), v.to_string()));
        undo.push((prop.to_owned(), prev));
    }
    if let Some(c) = r.cpu_max {
        if limits.cpu_max > 0.0 && c > limits.cpu_max {
            return Err(format!("cpu_max {c} cores is above this workload's cap limits.cpu_max {}", limits.cpu_max));
        }
        let prev = parse_quota_per_sec(&get("CPUQuotaPerSecUSec"))?;
        plan.details.insert("previous.cpu_max".into(), prev.map_or("max".into(), |p| p.to_string()));
        props.push(("CPUQuota".into(), cpu_quota(c)));
        undo.push(("CPUQuota".into(), prev.map(cpu_quota).unwrap_or_default()));
    }
    let margin = Some(limits.memory_margin);
    plan.push(
        Step::SystemdSet { systemctl: systemctl.into(), unit: unit.clone(), props, memory_margin: margin },
        vec![Step::SystemdSet { systemctl: systemctl.into(), unit, props: undo, memory_margin: margin }],
    );
    Ok(plan)
}

/// Runs `systemctl set-property`; with a margin, memory properties below the unit's usage
/// plus the margin are refused ([`StepError::Guard`]).
pub async fn set_property(
    runner: &dyn Runner,
    systemctl: &str,
    unit: &str,
    props: &[(String, String)],
    memory_margin: Option<u64>,
    left: Duration,
) -> Result<(), StepError> {
    if let Some(margin) = memory_margin {
        let lowering =
            props.iter().filter(|(k, _)| k == "MemoryMax" || k == "MemoryHigh").filter_map(|(_, v)| memory_prop(v));
        if let Some(lowest) = lowering.min() {
            let cur = show(runner, systemctl, unit, &["MemoryCurrent"]).await.map_err(StepError::Failed)?;
            let usage = cur.get("MemoryCurrent").and_then(|v| memory_prop(v));
            match usage {
                Some(u) if lowest < u.saturating_add(margin) => {
                    return Err(StepError::Guard(format!(
                        "{} is below the unit's usage {} + margin {}",
                        format_bytes(lowest),
                        format_bytes(u),
                        format_bytes(margin)
                    )));
                }
                None => return Err(StepError::Guard("the unit's memory usage is unknown".into())),
                _ => {}
            }
        }
    }
    let argv = set_property_argv(systemctl, unit, props);
    run_checked(runner, &argv, left.min(Duration::from_secs(30))).await.map(|_| ()).map_err(StepError::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_units_take_the_instance() {
        assert_eq!(instance_unit("web@.service", Some("3")).as_deref(), Ok("web@3.service"));
        assert_eq!(instance_unit("web@1.service", Some("3")).as_deref(), Ok("web@3.service"));
        assert_eq!(instance_unit("web@1.service", None).as_deref(), Ok("web@1.service"));
        assert_eq!(instance_unit("web.service", None).as_deref(), Ok("web.service"));
        assert!(instance_unit("web@.service", None).expect_err("needs instance").contains("needs an instance"));
        assert!(instance_unit("web.service", Some("2")).expect_err("not template").contains("not a template"));
    }

    #[test]
    fn set_property_argv_is_runtime_only() {
        let a = set_property_argv(
            "systemctl",
            "web.service",
            &[("MemoryMax".into(), "1073741824".into()), ("CPUQuota".into(), cpu_quota(1.5))],
        );
        assert_eq!(
            a,
            ["systemctl", "set-property", "--runtime", "web.service", "MemoryMax=1073741824", "CPUQuota=150%"]
        );
    }

    #[test]
    fn quota_per_sec_parses_systemd_spellings() {
        assert_eq!(parse_quota_per_sec("infinity"), Ok(None));
        assert_eq!(parse_quota_per_sec("1.500000s"), Ok(Some(1.5)));
        assert_eq!(parse_quota_per_sec("500ms"), Ok(Some(0.5)));
        assert!(parse_quota_per_sec("soon").is_err());
    }
}
