//! Cost- and SLA-aware placement: resize in place when the host has headroom, otherwise
//! move to a host of a suitable tier.
//!
//! A tier (label `tier` on the agent's host) has a cost per hour and a performance factor
//! (work per unit of resource relative to `standard` = 1.0). Predicted demand is sized
//! for a tier as demand / performance; a tier is eligible when the set's SLA allows it
//! (its tier list and minimum performance); among eligible tiers the cheapest wins (the
//! faster one on a tie), and within the tier the connected host with the most room that
//! fits the sized demand.

use serde::{Deserialize, Serialize};

use super::policy::{SlaConfig, TierConfig};

/// Share of a host's memory kept free by in-place growth.
pub const HOST_RESERVE_SHARE: f64 = 0.1;

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCapacity {
    pub host: String,
    /// Its `tier` label, if any.
    pub tier: Option<String>,
    /// Memory available now (bytes); NaN when unknown.
    pub mem_available: f64,
    /// Total memory (bytes); NaN when unknown.
    pub mem_total: f64,
    pub connected: bool,
}

/// Whether `extra` more bytes fit on the host while keeping [`HOST_RESERVE_SHARE`] free.
/// Unknown capacity never fits (no guessing on someone else's host).
pub fn fits_in_place(extra: f64, h: &HostCapacity) -> bool {
    if !(h.mem_available.is_finite() && h.mem_total.is_finite()) || extra.is_nan() {
        return false;
    }
    h.mem_available - extra.max(0.0) >= h.mem_total * HOST_RESERVE_SHARE
}

/// One tier considered for a demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierOption {
    pub tier: String,
    pub cost_per_hour: f64,
    pub performance: f64,
    /// Demand sized for this tier (demand / performance).
    pub sized: f64,
    /// Why not, when the SLA rules it out.
    pub excluded: Option<String>,
}

/// Every tier with its sizing, eligible ones first, cheapest first (faster on a tie).
pub fn rank_tiers(demand: f64, tiers: &[TierConfig], sla: Option<&SlaConfig>) -> Vec<TierOption> {
    let mut out: Vec<TierOption> = tiers
        .iter()
        .map(|t| {
            let excluded = match sla {
                Some(s) if !s.tiers.is_empty() && !s.tiers.contains(&t.name) => {
                    Some(format!("SLA {} does not allow tier {}", s.name, t.name))
                }
                Some(s) if t.performance < s.min_performance => Some(format!(
                    "performance {} is below SLA {}'s minimum {}",
                    t.performance, s.name, s.min_performance
                )),
                _ => None,
            };
            TierOption {
                tier: t.name.clone(),
                cost_per_hour: t.cost_per_hour,
                performance: t.performance,
                sized: demand / t.performance,
                excluded,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.excluded
            .is_some()
            .cmp(&b.excluded.is_some())
            .then(a.cost_per_hour.total_cmp(&b.cost_per_hour))
            .then(b.performance.total_cmp(&a.performance))
            .then(a.tier.cmp(&b.tier))
    });
    out
}

/// Where a workload goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub host: String,
    pub tier: String,
    /// Memory to give it there (the demand sized for the tier).
    pub sized: f64,
    pub cost_per_hour: f64,
}

/// The cheapest eligible tier with a connected host (other than `source`) that fits the
/// sized demand, and in it the host with the most memory available.
pub fn place(
    demand: f64,
    source: &str,
    tiers: &[TierConfig],
    sla: Option<&SlaConfig>,
    hosts: &[HostCapacity],
) -> Option<Placement> {
    for opt in rank_tiers(demand, tiers, sla).into_iter().filter(|o| o.excluded.is_none()) {
        let best = hosts
            .iter()
            .filter(|h| h.connected && h.host != source && h.tier.as_deref() == Some(opt.tier.as_str()))
            .filter(|h| fits_in_place(opt.sized, h))
            .max_by(|a, b| a.mem_available.total_cmp(&b.mem_available).then(b.host.cmp(&a.host)));
        if let Some(h) = best {
            return Some(Placement {
                host: h.host.clone(),
                tier: opt.tier,
                sized: opt.sized,
                cost_per_hour: opt.cost_per_hour,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = (1u64 << 30) as f64;

    fn tiers() -> Vec<TierConfig> {
        vec![
            TierConfig { name: "spot".into(), cost_per_hour: 0.03, performance: 0.7 },
            TierConfig { name: "standard".into(), cost_per_hour: 0.10, performance: 1.0 },
            TierConfig { name: "high".into(), cost_per_hour: 0.25, performance: 2.0 },
        ]
    }

    fn host(name: &str, tier: &str, avail_gib: f64) -> HostCapacity {
        HostCapacity {
            host: name.into(),
            tier: Some(tier.into()),
            mem_available: avail_gib * GIB,
            mem_total: 16.0 * GIB,
            connected: true,
        }
    }

    #[test]
    fn in_place_keeps_the_reserve_and_never_guesses() {
        let h = host("a", "standard", 4.0);
        assert!(fits_in_place(2.0 * GIB, &h));
        assert!(!fits_in_place(2.5 * GIB, &h), "16 GiB * 10% must stay free");
        let unknown = HostCapacity { mem_available: f64::NAN, ..h };
        assert!(!fits_in_place(1.0, &unknown));
    }

    #[test]
    fn sla_excludes_tiers_and_the_cheapest_eligible_tier_wins() {
        let gold = SlaConfig { name: "gold".into(), min_performance: 1.0, tiers: vec![] };
        let r = rank_tiers(2.0 * GIB, &tiers(), Some(&gold));
        assert_eq!(r.iter().map(|o| o.tier.as_str()).collect::<Vec<_>>(), ["standard", "high", "spot"]);
        assert!(r[2].excluded.as_deref().unwrap().contains("below SLA gold"));
        assert_eq!(r[1].sized, 1.0 * GIB, "demand / performance");
        let only_high = SlaConfig { name: "hp".into(), min_performance: 0.0, tiers: vec!["high".into()] };
        assert_eq!(rank_tiers(GIB, &tiers(), Some(&only_high))[0].tier, "high");
        assert_eq!(rank_tiers(GIB, &tiers(), None)[0].tier, "spot", "no SLA: cheapest");
    }

    /// Table: (hosts, sla, expected host).
    #[test]
    fn placement_table() {
        let gold = SlaConfig { name: "gold".into(), min_performance: 1.0, tiers: vec![] };
        let cases: Vec<(Vec<HostCapacity>, Option<&SlaConfig>, Option<&str>)> = vec![
            (vec![host("s1", "spot", 10.0), host("n1", "standard", 10.0)], None, Some("s1")),
            (vec![host("s1", "spot", 10.0), host("n1", "standard", 10.0)], Some(&gold), Some("n1")),
            // The standard host is too full for 4 GiB: the next eligible tier.
            (vec![host("n1", "standard", 5.0), host("h1", "high", 5.0)], Some(&gold), Some("h1")),
            // The source itself is never the target.
            (vec![host("src", "standard", 10.0)], Some(&gold), None),
            // Disconnected and untiered hosts are not candidates.
            (
                vec![
                    HostCapacity { connected: false, ..host("n1", "standard", 10.0) },
                    HostCapacity { tier: None, ..host("n2", "standard", 10.0) },
                ],
                None,
                None,
            ),
            // The roomiest host of the tier.
            (vec![host("n1", "standard", 8.0), host("n2", "standard", 12.0)], Some(&gold), Some("n2")),
        ];
        for (hosts, sla, want) in cases {
            let got = place(4.0 * GIB, "src", &tiers(), sla, &hosts);
            assert_eq!(got.as_ref().map(|p| p.host.as_str()), want, "{hosts:?}");
        }
    }
}
