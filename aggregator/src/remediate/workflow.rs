//! Workflows: multi-step, multi-host action plans executed through the [`Dispatcher`],
//! each step audited, with a per-step timeout, an overall deadline, and rollback of the
//! completed steps in reverse order when any step fails.
//!
//! [`ActionPlan`] is pure data (serde): the decision engine builds it, the Orchestrator API
//! and REST gateway accept it, and [`run`] executes it.
//!
//! | plan        | steps                                                                          |
//! |-------------|--------------------------------------------------------------------------------|
//! | `resize`    | resize the workload (the agent checks health and rolls back itself)            |
//! | `restart`   | restart the workload                                                           |
//! | `promote`   | health-check the standby, standby ready (+ weight), drain the primary, wait for the drain, remediate the primary |
//! | `migrate`   | start on the target, health-check it, add/enable it in the LB, drain the source, wait, stop on the source |
//! | `scale`     | up: start instances, health-check, add + enable LB entries; down: drain, wait, remove LB entries, stop |
//! | `blue_green`| health-check every green member, green ready, drain blue, wait                  |
//!
//! [`Dispatcher`]: super::dispatch::Dispatcher

use augur_core::command::Resize;
use serde::{Deserialize, Serialize};

/// A load-balancer backend: the host whose agent drives HAProxy, the LB workload's declared
/// name on that agent, and the HAProxy backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancer {
    pub host: String,
    pub workload: String,
    pub backend: String,
}

/// One instance of a workload behind a load balancer: the host that runs it, its declared
/// workload name there, and its server name in the LB backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub host: String,
    pub workload: String,
    pub server: String,
}

/// An instance to start or stop (a systemd template instance or exec-hook instance), and how
/// the load balancer knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub host: String,
    pub workload: String,
    /// The instance name passed to `start`/`stop` (`None`: the workload itself).
    #[serde(default)]
    pub instance: Option<String>,
    /// Server name in the LB backend.
    pub server: String,
    /// `ip:port` to add to the LB backend (`None`: the server is already declared in the LB
    /// configuration and is only enabled or disabled).
    #[serde(default)]
    pub address: Option<String>,
}

/// What to do with the primary once traffic is off it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "remedy")]
pub enum Remedy {
    /// Leave it drained (an operator looks at it).
    #[default]
    None,
    Restart,
    Resize(Resize),
}

/// A remediation to carry out. Pure data: validated by [`ActionPlan::validate`], executed by [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum ActionPlan {
    /// Resize a workload in place.
    Resize { host: String, workload: String, resize: Resize },
    /// Restart a workload in place.
    Restart { host: String, workload: String },
    /// Warm-standby promotion: traffic to the standby, drain the primary, then remediate it.
    Promote {
        lb: LoadBalancer,
        primary: Member,
        standby: Member,
        /// Weight to give the standby once ready (`None`: leave its weight).
        #[serde(default)]
        standby_weight: Option<u32>,
        #[serde(default)]
        remedy: Remedy,
    },
    /// Live migration of a stateless workload: start on the target, check health, switch
    /// traffic, stop on the source. A failed target health check rolls back and leaves the
    /// source serving.
    Migrate { workload: String, lb: LoadBalancer, source: Instance, target: Instance },
    /// Horizontal scaling of a resource set: `delta > 0` starts the listed instances and adds
    /// them to the LB; `delta < 0` drains, removes and stops them. `instances.len() == |delta|`.
    Scale { set: String, delta: i32, lb: LoadBalancer, instances: Vec<Instance> },
    /// Blue/green switch: every green member healthy and ready, then every blue member drained.
    BlueGreen { lb: LoadBalancer, blue: Vec<Member>, green: Vec<Member> },
}

/// Why a plan is refused before anything is sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("plan {plan}: {field} is empty")]
    Empty { plan: &'static str, field: &'static str },
    #[error("plan {plan}: {why}")]
    Invalid { plan: &'static str, why: String },
}

impl ActionPlan {
    /// The plan's kind, as in its serde tag.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionPlan::Resize { .. } => "resize",
            ActionPlan::Restart { .. } => "restart",
            ActionPlan::Promote { .. } => "promote",
            ActionPlan::Migrate { .. } => "migrate",
            ActionPlan::Scale { .. } => "scale",
            ActionPlan::BlueGreen { .. } => "blue_green",
        }
    }

    /// Every (host, workload) the plan sends a command to, the load balancer included, in
    /// first-use order without repeats. Safety limits (concurrency, cooldown) key on these.
    pub fn targets(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |h: &str, w: &str| {
            if !out.iter().any(|(a, b)| a == h && b == w) {
                out.push((h.to_owned(), w.to_owned()));
            }
        };
        match self {
            ActionPlan::Resize { host, workload, .. } | ActionPlan::Restart { host, workload } => push(host, workload),
            ActionPlan::Promote { lb, primary, standby, .. } => {
                push(&primary.host, &primary.workload);
                push(&standby.host, &standby.workload);
                push(&lb.host, &lb.workload);
            }
            ActionPlan::Migrate { lb, source, target, .. } => {
                push(&source.host, &source.workload);
                push(&target.host, &target.workload);
                push(&lb.host, &lb.workload);
            }
            ActionPlan::Scale { lb, instances, .. } => {
                for i in instances {
                    push(&i.host, &i.workload);
                }
                push(&lb.host, &lb.workload);
            }
            ActionPlan::BlueGreen { lb, blue, green } => {
                for m in blue.iter().chain(green) {
                    push(&m.host, &m.workload);
                }
                push(&lb.host, &lb.workload);
            }
        }
        out
    }

    /// Checks the plan is complete and consistent. Nothing is sent for an invalid plan; an
    /// empty target set is an error, never "all".
    pub fn validate(&self) -> Result<(), PlanError> {
        let plan = self.kind();
        let nonempty = |field: &'static str, v: &str| {
            if v.trim().is_empty() { Err(PlanError::Empty { plan, field }) } else { Ok(()) }
        };
        let invalid = |why: String| PlanError::Invalid { plan, why };
        let lb_ok = |lb: &LoadBalancer| -> Result<(), PlanError> {
            nonempty("lb.host", &lb.host)?;
            nonempty("lb.workload", &lb.workload)?;
            nonempty("lb.backend", &lb.backend)
        };
        let member_ok = |m: &Member| -> Result<(), PlanError> {
            nonempty("host", &m.host)?;
            nonempty("workload", &m.workload)?;
            nonempty("server", &m.server)
        };
        let instance_ok = |i: &Instance| -> Result<(), PlanError> {
            nonempty("host", &i.host)?;
            nonempty("workload", &i.workload)?;
            nonempty("server", &i.server)?;
            if let Some(a) = &i.address
                && a.parse::<std::net::SocketAddr>().is_err()
            {
                return Err(invalid(format!("address {a:?} of server {} is not ip:port", i.server)));
            }
            Ok(())
        };
        match self {
            ActionPlan::Resize { host, workload, resize } => {
                nonempty("host", host)?;
                nonempty("workload", workload)?;
                if *resize == Resize::default() {
                    return Err(invalid("resize changes nothing (no memory_max, memory_high or cpu_max)".into()));
                }
                Ok(())
            }
            ActionPlan::Restart { host, workload } => {
                nonempty("host", host)?;
                nonempty("workload", workload)
            }
            ActionPlan::Promote { lb, primary, standby, standby_weight, remedy } => {
                lb_ok(lb)?;
                member_ok(primary)?;
                member_ok(standby)?;
                if primary.server == standby.server {
                    return Err(invalid(format!("primary and standby are the same server {:?}", primary.server)));
                }
                if let Some(w) = standby_weight
                    && *w > 256
                {
                    return Err(invalid(format!("standby_weight {w} is above 256")));
                }
                if let Remedy::Resize(r) = remedy
                    && *r == Resize::default()
                {
                    return Err(invalid("the primary's resize changes nothing".into()));
                }
                Ok(())
            }
            ActionPlan::Migrate { workload, lb, source, target } => {
                nonempty("workload", workload)?;
                lb_ok(lb)?;
                instance_ok(source)?;
                instance_ok(target)?;
                if source.host == target.host && source.instance == target.instance {
                    return Err(invalid(format!("source and target are the same instance on {}", source.host)));
                }
                if source.server == target.server {
                    return Err(invalid(format!("source and target are the same LB server {:?}", source.server)));
                }
                Ok(())
            }
            ActionPlan::Scale { set, delta, lb, instances } => {
                nonempty("set", set)?;
                lb_ok(lb)?;
                if *delta == 0 || instances.is_empty() {
                    return Err(PlanError::Empty { plan, field: "instances" });
                }
                if instances.len() != delta.unsigned_abs() as usize {
                    return Err(invalid(format!("delta {delta} but {} instances listed", instances.len())));
                }
                for i in instances {
                    instance_ok(i)?;
                }
                Ok(())
            }
            ActionPlan::BlueGreen { lb, blue, green } => {
                lb_ok(lb)?;
                if blue.is_empty() {
                    return Err(PlanError::Empty { plan, field: "blue" });
                }
                if green.is_empty() {
                    return Err(PlanError::Empty { plan, field: "green" });
                }
                for m in blue.iter().chain(green) {
                    member_ok(m)?;
                }
                if let Some(m) = blue.iter().find(|b| green.iter().any(|g| g.server == b.server)) {
                    return Err(invalid(format!("server {:?} is both blue and green", m.server)));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb() -> LoadBalancer {
        LoadBalancer { host: "lb".into(), workload: "haproxy".into(), backend: "app".into() }
    }

    #[test]
    fn plans_round_trip_through_json_with_an_action_tag() {
        let p = ActionPlan::Promote {
            lb: lb(),
            primary: Member { host: "a".into(), workload: "web".into(), server: "a".into() },
            standby: Member { host: "b".into(), workload: "web".into(), server: "b".into() },
            standby_weight: Some(100),
            remedy: Remedy::Resize(Resize { memory_max: Some(1 << 30), ..Resize::default() }),
        };
        let j = serde_json::to_value(&p).expect("serializes");
        assert_eq!(j["action"], "promote");
        assert_eq!(j["remedy"]["remedy"], "resize");
        let back: ActionPlan = serde_json::from_value(j).expect("deserializes");
        assert_eq!(back, p);
        assert_eq!(
            p.targets(),
            vec![("a".into(), "web".into()), ("b".into(), "web".into()), ("lb".into(), "haproxy".into())]
        );
    }

    #[test]
    fn incomplete_or_inconsistent_plans_are_refused() {
        let inst = |host: &str, server: &str| Instance {
            host: host.into(),
            workload: "web".into(),
            instance: None,
            server: server.into(),
            address: None,
        };
        let cases: Vec<(ActionPlan, &str)> = vec![
            (ActionPlan::Restart { host: "".into(), workload: "web".into() }, "host is empty"),
            (
                ActionPlan::Resize { host: "a".into(), workload: "web".into(), resize: Resize::default() },
                "changes nothing",
            ),
            (ActionPlan::Scale { set: "web".into(), delta: 0, lb: lb(), instances: vec![] }, "instances is empty"),
            (ActionPlan::Scale { set: "web".into(), delta: 2, lb: lb(), instances: vec![inst("a", "a")] }, "delta 2"),
            (ActionPlan::BlueGreen { lb: lb(), blue: vec![], green: vec![] }, "blue is empty"),
            (
                ActionPlan::Migrate {
                    workload: "web".into(),
                    lb: lb(),
                    source: inst("a", "s"),
                    target: Instance { address: Some("nope".into()), ..inst("b", "t") },
                },
                "not ip:port",
            ),
            (
                ActionPlan::Migrate {
                    workload: "web".into(),
                    lb: lb(),
                    source: inst("a", "s"),
                    target: inst("b", "s"),
                },
                "same LB server",
            ),
        ];
        for (p, needle) in cases {
            let e = p.validate().expect_err(needle).to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }
}
