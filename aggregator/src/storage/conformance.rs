//! The conformance suite every [`Store`] implementation passes.
//!
//! Each check is a function taking a factory that builds an empty store with the given
//! options; [`conformance_tests!`] turns them into `#[test]`s inside an implementation's
//! test module: `conformance_tests!(make_store);` with
//! `fn make_store(opts: StoreOptions) -> Box<dyn Store>`.
//! Expected values are computed here from a plain model, not from store helpers.

use super::{
    AgentProgress, HostRecord, RetentionRule, Rollup, SeriesId, SeriesMeta, Store, StoreError, StoreOptions, WriteBatch,
};
use augur_core::{MetricKind, SeriesKey};
use std::collections::BTreeMap;
use std::time::Duration;

/// Builds an empty store with the given options.
pub(crate) type Make<'a> = &'a dyn Fn(StoreOptions) -> Box<dyn Store>;

/// A minute-aligned timestamp in 2023.
pub(crate) const T0: i64 = 1_700_000_040_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// A label-less gauge key.
pub(crate) fn key(resource: &str, metric: &str) -> SeriesKey {
    SeriesKey::new(resource, metric, "ratio", MetricKind::Gauge)
}

/// Writes points without progress.
pub(crate) fn put(s: &dyn Store, points: &[(SeriesId, i64, f64)]) {
    s.write(&WriteBatch { points: points.to_vec(), progress: None }).expect("write");
}

/// Points as comparable bits (bit-exact `f64` comparison).
pub(crate) fn bits(p: &[(i64, f64)]) -> Vec<(i64, u64)> {
    p.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

/// Rollups as comparable bits.
pub(crate) fn rollup_bits(r: &[Rollup]) -> Vec<[u64; 7]> {
    r.iter()
        .map(|r| {
            [
                r.start_ms as u64,
                r.min.to_bits(),
                r.max.to_bits(),
                r.sum.to_bits(),
                r.count,
                r.last.to_bits(),
                r.last_ms as u64,
            ]
        })
        .collect()
}

/// Expected one-minute rollups of a model series, with bucket start in `[lo, hi)`.
fn model_rollups(model: &BTreeMap<i64, f64>, lo: i64, hi: i64) -> Vec<Rollup> {
    let mut by_minute: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
    for (&t, &v) in model {
        by_minute.entry(t.div_euclid(MIN) * MIN).or_default().push((t, v));
    }
    by_minute
        .into_iter()
        .filter(|(m, _)| *m >= lo && *m < hi)
        .map(|(m, pts)| Rollup {
            start_ms: m,
            // Folded from the first value in time order, so sums are bit-exact.
            min: pts[1..].iter().fold(pts[0].1, |a, p| a.min(p.1)),
            max: pts[1..].iter().fold(pts[0].1, |a, p| a.max(p.1)),
            sum: pts[1..].iter().fold(pts[0].1, |a, p| a + p.1),
            count: pts.len() as u64,
            last: pts[pts.len() - 1].1,
            last_ms: pts[pts.len() - 1].0,
        })
        .collect()
}

fn model_points(model: &BTreeMap<i64, f64>) -> Vec<(i64, f64)> {
    model.iter().map(|(&t, &v)| (t, v)).collect()
}

/// Series ids are dense, stable per (host, key) and distinct across hosts and keys.
pub(crate) fn resolve_is_idempotent_and_distinct_per_host(make: Make<'_>) {
    let s = make(StoreOptions::default());
    let k1 = key("host", "node_load1");
    let k2 = key("host", "node_load5");
    let k3 = key("host", "node_cpu_seconds_total").with_label("mode", "user");
    let a = s.resolve_series("h1", &k1).expect("resolve");
    assert_eq!(s.resolve_series("h1", &k1).expect("resolve"), a);
    let b = s.resolve_series("h2", &k1).expect("resolve");
    let c = s.resolve_series("h1", &k2).expect("resolve");
    let d = s.resolve_series("h1", &k3).expect("resolve");
    let mut ids = vec![a, b, c, d];
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3, 4], "ids are dense from 1 and distinct");
    assert_eq!(s.series_meta(a), Some(SeriesMeta { host_id: "h1".into(), key: k1.clone() }));
    assert_eq!(s.series_meta(d).map(|m| m.key), Some(k3));
    assert_eq!(s.series_meta(0), None);
    assert_eq!(s.series_meta(99), None);
    let all: Vec<SeriesId> = s.list_series(None).into_iter().map(|(id, _)| id).collect();
    assert_eq!(all, vec![1, 2, 3, 4]);
    let h1: Vec<SeriesId> = s.list_series(Some("h1")).into_iter().map(|(id, _)| id).collect();
    assert_eq!(h1, vec![a, c, d]);
    assert!(s.list_series(Some("nobody")).is_empty());
    assert_eq!(s.lookup_series("h1", &k1), Some(a));
    assert_eq!(s.lookup_series("h2", &k2), None, "lookup never creates");
    assert_eq!(s.lookup_series("nobody", &k1), None);
    assert_eq!((s.series_count("h1"), s.series_count("h2"), s.series_count("nobody")), (3, 1, 0));
    assert_eq!(s.list_series(None).len(), 4);
}

/// `read_range` is `[start, end)`, ascending, per series; unknown ids are an error.
pub(crate) fn write_and_read_range_boundaries(make: Make<'_>) {
    let s = make(StoreOptions::default());
    let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
    let b = s.resolve_series("h1", &key("host", "b")).expect("resolve");
    // Written out of order, over two batches.
    put(&*s, &[(a, T0 + 5000, 5.0), (a, T0 + 1000, 1.0), (b, T0 + 2000, -2.0), (a, T0 + 9000, 9.0)]);
    put(&*s, &[(a, T0 + 2000, 2.0), (a, T0, 0.0), (a, T0 - 1, -1.0), (a, T0 + 4000, 4.0)]);
    let r = s.read_range(a, T0 + 1000, T0 + 5000).expect("read");
    assert_eq!(r, vec![(T0 + 1000, 1.0), (T0 + 2000, 2.0), (T0 + 4000, 4.0)]);
    let all = s.read_range(a, i64::MIN, i64::MAX).expect("read");
    let ts: Vec<i64> = all.iter().map(|p| p.0).collect();
    assert_eq!(ts, vec![T0 - 1, T0, T0 + 1000, T0 + 2000, T0 + 4000, T0 + 5000, T0 + 9000]);
    assert!(s.read_range(a, T0 + 5000, T0 + 5000).expect("read").is_empty());
    assert!(s.read_range(a, T0 + 6000, T0).expect("read").is_empty());
    assert_eq!(s.read_range(a, T0 + 9000, T0 + 9001).expect("read"), vec![(T0 + 9000, 9.0)]);
    assert_eq!(s.read_range(b, T0, T0 + HOUR).expect("read"), vec![(T0 + 2000, -2.0)]);
    assert!(matches!(s.read_range(99, 0, 1), Err(StoreError::UnknownSeries(99))));
    assert!(matches!(s.read_rollups(99, 0, 1), Err(StoreError::UnknownSeries(99))));
    assert!(matches!(s.latest(99), Err(StoreError::UnknownSeries(99))));
}

/// Writing a timestamp twice keeps the last value written, open or sealed.
pub(crate) fn duplicate_timestamps_keep_last_written(make: Make<'_>) {
    let s = make(StoreOptions::default());
    let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
    put(&*s, &[(a, T0, 1.0)]);
    put(&*s, &[(a, T0, 2.0)]);
    put(&*s, &[(a, T0 + 1000, 3.0), (a, T0 + 1000, 4.0)]);
    assert_eq!(s.read_range(a, T0, T0 + MIN).expect("read"), vec![(T0, 2.0), (T0 + 1000, 4.0)]);
    s.seal_all_and_compact().expect("seal");
    assert_eq!(s.read_range(a, T0, T0 + MIN).expect("read"), vec![(T0, 2.0), (T0 + 1000, 4.0)]);
    // Overwrite a sealed point: visible at once, and after sealing again.
    put(&*s, &[(a, T0, -0.0)]);
    let expect = bits(&[(T0, -0.0), (T0 + 1000, 4.0)]);
    assert_eq!(bits(&s.read_range(a, T0, T0 + MIN).expect("read")), expect);
    let r = s.read_rollups(a, T0, T0 + MIN).expect("rollups");
    assert_eq!((r.len(), r[0].count, r[0].min, r[0].max), (1, 2, -0.0, 4.0));
    s.seal_all_and_compact().expect("seal");
    assert_eq!(bits(&s.read_range(a, T0, T0 + MIN).expect("read")), expect);
    let r = s.read_rollups(a, T0, T0 + MIN).expect("rollups");
    assert_eq!((r.len(), r[0].count, r[0].sum), (1, 2, 4.0), "a replaced point is not counted twice");
}

/// `latest` is the newest point by timestamp, open or sealed.
pub(crate) fn latest_tracks_newest_point(make: Make<'_>) {
    let s = make(StoreOptions::default());
    let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
    assert_eq!(s.latest(a).expect("latest"), None);
    put(&*s, &[(a, T0 + 5000, 5.0), (a, T0 + 3000, 3.0)]);
    assert_eq!(s.latest(a).expect("latest"), Some((T0 + 5000, 5.0)));
    put(&*s, &[(a, T0, 0.0)]);
    assert_eq!(s.latest(a).expect("latest"), Some((T0 + 5000, 5.0)));
    put(&*s, &[(a, T0 + 5000, 6.0)]);
    assert_eq!(s.latest(a).expect("latest"), Some((T0 + 5000, 6.0)));
    s.seal_all_and_compact().expect("seal");
    assert_eq!(s.latest(a).expect("latest"), Some((T0 + 5000, 6.0)));
    put(&*s, &[(a, T0 + 1000, 1.0)]);
    assert_eq!(s.latest(a).expect("latest"), Some((T0 + 5000, 6.0)));
    put(&*s, &[(a, T0 + 7000, 7.0)]);
    assert_eq!(s.latest(a).expect("latest"), Some((T0 + 7000, 7.0)));
}

/// Agent progress is stored with the points of the same batch, or not at all.
pub(crate) fn progress_is_atomic_with_points(make: Make<'_>) {
    let s = make(StoreOptions::default());
    let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
    assert_eq!(s.agent_progress("h1").expect("progress"), None);
    let p3 = AgentProgress { incarnation: 7, acked_sequence: 3 };
    s.write(&WriteBatch { points: vec![(a, T0, 1.0)], progress: Some(("h1".into(), p3)) }).expect("write");
    assert_eq!(s.agent_progress("h1").expect("progress"), Some(p3));
    assert_eq!(s.agent_progress("h2").expect("progress"), None);
    // A batch with an unknown series fails as a whole.
    let p4 = AgentProgress { incarnation: 7, acked_sequence: 4 };
    let bad = WriteBatch { points: vec![(a, T0 + 1000, 2.0), (42, T0, 1.0)], progress: Some(("h1".into(), p4)) };
    assert!(matches!(s.write(&bad), Err(StoreError::UnknownSeries(42))));
    assert_eq!(s.agent_progress("h1").expect("progress"), Some(p3));
    assert_eq!(s.read_range(a, T0, T0 + MIN).expect("read"), vec![(T0, 1.0)]);
    // Progress alone is a valid batch.
    s.write(&WriteBatch { points: vec![], progress: Some(("h1".into(), p4)) }).expect("write");
    assert_eq!(s.agent_progress("h1").expect("progress"), Some(p4));
}

/// NaN points are dropped; infinities are kept.
pub(crate) fn nan_points_are_not_stored(make: Make<'_>) {
    let s = make(StoreOptions::default());
    let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
    put(&*s, &[(a, T0, 1.0), (a, T0 + 1000, f64::NAN), (a, T0 + 2000, f64::INFINITY)]);
    let expect = vec![(T0, 1.0), (T0 + 2000, f64::INFINITY)];
    assert_eq!(s.read_range(a, T0, T0 + MIN).expect("read"), expect);
    s.seal_all_and_compact().expect("seal");
    assert_eq!(s.read_range(a, T0, T0 + MIN).expect("read"), expect);
    assert_eq!(s.latest(a).expect("latest"), Some((T0 + 2000, f64::INFINITY)));
}

/// Sealing moves points into blocks without changing what reads return.
pub(crate) fn maintain_seals_and_reads_identically(make: Make<'_>) {
    let opts = StoreOptions { block_points: 60, max_open_age: Duration::from_secs(600), ..Default::default() };
    let s = make(opts);
    let ids: Vec<SeriesId> =
        ["a", "b"].iter().map(|m| s.resolve_series("h1", &key("host", m)).expect("resolve")).collect();
    for chunk in 0..108 {
        let mut points = Vec::new();
        for i in chunk * 10..(chunk + 1) * 10 {
            for (n, &id) in ids.iter().enumerate() {
                let v = ((i as f64) * 0.1 + n as f64).sin() * 100.0;
                points.push((id, T0 + i as i64 * 10_000, v));
            }
        }
        put(&*s, &points);
    }
    let snapshot = |s: &dyn Store| {
        ids.iter()
            .map(|&id| {
                (
                    bits(&s.read_range(id, T0 - HOUR, T0 + 4 * HOUR).expect("read")),
                    rollup_bits(&s.read_rollups(id, T0 - HOUR, T0 + 4 * HOUR).expect("rollups")),
                    s.latest(id).expect("latest"),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = snapshot(&*s);
    assert_eq!(before[0].0.len(), 1080);
    assert_eq!(before[0].1.len(), 180);
    // The newest minute (6 points) is still filling and stays open.
    let st = s.maintain(T0 + 3 * HOUR).expect("maintain");
    assert_eq!(st.points_sealed, 2 * 1074);
    assert!(st.blocks_sealed >= 2);
    assert!(st.rollups_written >= 2 * 179);
    assert_eq!(snapshot(&*s), before);
    let st = s.maintain(T0 + 3 * HOUR).expect("maintain");
    assert_eq!(st.points_sealed, 0, "nothing due");
    let st = s.seal_all_and_compact().expect("seal all");
    assert_eq!(st.points_sealed, 2 * 6);
    assert_eq!(snapshot(&*s), before);
    // A series idle for longer than max_open_age is sealed completely.
    let c = s.resolve_series("h1", &key("host", "c")).expect("resolve");
    put(&*s, &[(c, T0, 1.0), (c, T0 + 1000, 2.0)]);
    assert_eq!(s.maintain(T0 + 20 * MIN).expect("maintain").points_sealed, 2);
    assert_eq!(s.read_range(c, T0, T0 + MIN).expect("read"), vec![(T0, 1.0), (T0 + 1000, 2.0)]);
}

/// Late points into a sealed range merge with it (new, replaced, before and after).
pub(crate) fn late_data_merges_into_sealed_range(make: Make<'_>) {
    let opts = StoreOptions { block_points: 30, ..Default::default() };
    let s = make(opts);
    let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
    let mut model = BTreeMap::new();
    let mut points = Vec::new();
    for i in 0..120 {
        let (t, v) = (T0 + i * 5000, i as f64);
        model.insert(t, v);
        points.push((a, t, v));
    }
    put(&*s, &points);
    s.seal_all_and_compact().expect("seal");
    let late = [
        (T0 + 62_500, 7.5),     // new timestamp inside a sealed minute
        (T0 + 65_000, -1.0),    // replaces a sealed point
        (T0 - 30_000, 3.0),     // before all sealed data, same minute as nothing
        (T0 + 599_999, 42.0),   // after the last point, inside the last sealed minute
        (T0 + 3 * HOUR, 1e300), // far after
        (T0 + 181_000, -7.0),   // inside a minute, near a likely block boundary
    ];
    for &(t, v) in &late {
        model.insert(t, v);
        put(&*s, &[(a, t, v)]);
    }
    let (lo, hi) = (T0 - HOUR, T0 + 4 * HOUR);
    let expect_pts = bits(&model_points(&model));
    let expect_rollups = rollup_bits(&model_rollups(&model, lo, hi));
    assert_eq!(bits(&s.read_range(a, lo, hi).expect("read")), expect_pts);
    assert_eq!(rollup_bits(&s.read_rollups(a, lo, hi).expect("rollups")), expect_rollups);
    let st = s.seal_all_and_compact().expect("seal");
    assert_eq!(st.points_sealed, late.len() as u64);
    assert_eq!(bits(&s.read_range(a, lo, hi).expect("read")), expect_pts);
    assert_eq!(rollup_bits(&s.read_rollups(a, lo, hi).expect("rollups")), expect_rollups);
    // Replaying the same points again (an agent resending a batch) changes nothing.
    for &(t, v) in &late {
        put(&*s, &[(a, t, v)]);
    }
    assert_eq!(rollup_bits(&s.read_rollups(a, lo, hi).expect("rollups")), expect_rollups);
    s.seal_all_and_compact().expect("seal");
    assert_eq!(bits(&s.read_range(a, lo, hi).expect("read")), expect_pts);
    assert_eq!(rollup_bits(&s.read_rollups(a, lo, hi).expect("rollups")), expect_rollups);
}

/// Rollups (min, max, avg, last, count) cover sealed and open data alike.
pub(crate) fn rollups_cover_sealed_and_open(make: Make<'_>) {
    let s = make(StoreOptions::default());
    let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
    let mut model = BTreeMap::new();
    // Minutes 0..3 sealed, then more points in minute 2 (one replacing) and minutes 3..5 open.
    for i in 0..36 {
        model.insert(T0 + i * 5000, (i % 7) as f64 - 3.0);
    }
    put(&*s, &model.iter().map(|(&t, &v)| (a, t, v)).collect::<Vec<_>>());
    s.seal_all_and_compact().expect("seal");
    let open =
        [(T0 + 2 * MIN + 2500, 100.0), (T0 + 2 * MIN + 5000, -50.0), (T0 + 3 * MIN, 1.0), (T0 + 4 * MIN + 59_999, 2.0)];
    for &(t, v) in &open {
        model.insert(t, v);
    }
    put(&*s, &open.iter().map(|&(t, v)| (a, t, v)).collect::<Vec<_>>());
    let r = s.read_rollups(a, T0, T0 + 5 * MIN).expect("rollups");
    assert_eq!(rollup_bits(&r), rollup_bits(&model_rollups(&model, T0, T0 + 5 * MIN)));
    assert_eq!(r.len(), 5);
    let m2 = r[2];
    assert_eq!((m2.min, m2.max, m2.count), (-50.0, 100.0, 13));
    assert_eq!((m2.last_ms, m2.last), (T0 + 2 * MIN + 55_000, model[&(T0 + 2 * MIN + 55_000)]));
    assert!((m2.avg() - m2.sum / 13.0).abs() < 1e-12);
    assert_eq!((r[4].count, r[4].last), (1, 2.0));
    // Bucket starts must lie in [start, end).
    let r = s.read_rollups(a, T0 + 1, T0 + 3 * MIN).expect("rollups");
    let starts: Vec<i64> = r.iter().map(|r| r.start_ms).collect();
    assert_eq!(starts, vec![T0 + MIN, T0 + 2 * MIN]);
    assert!(s.read_rollups(a, T0 + 1, T0 + MIN).expect("rollups").is_empty());
    s.seal_all_and_compact().expect("seal");
    let r = s.read_rollups(a, T0, T0 + 5 * MIN).expect("rollups");
    assert_eq!(rollup_bits(&r), rollup_bits(&model_rollups(&model, T0, T0 + 5 * MIN)));
}

/// Retention drops old raw data and rollups per the first matching rule, else the defaults.
pub(crate) fn retention_follows_rules_and_defaults(make: Make<'_>) {
    let now = T0 + 30 * DAY;
    let d = |ms: i64| Duration::from_millis(ms as u64);
    let opts = StoreOptions {
        block_points: 10,
        raw_retention: d(DAY),
        rollup_retention: d(7 * DAY),
        retention_rules: vec![
            RetentionRule {
                match_host_labels: BTreeMap::from([("tier".to_owned(), "gold".to_owned())]),
                resource_prefix: None,
                raw: d(30 * DAY),
                rollup: d(365 * DAY),
            },
            RetentionRule {
                match_host_labels: BTreeMap::new(),
                resource_prefix: Some("container/".to_owned()),
                raw: d(2 * HOUR),
                rollup: d(DAY),
            },
        ],
        ..Default::default()
    };
    let s = make(opts);
    let gold_labels = BTreeMap::from([("tier".to_owned(), "gold".to_owned()), ("dc".to_owned(), "x".to_owned())]);
    s.put_host(&HostRecord { host_id: "gold".into(), labels: gold_labels, ..Default::default() }).expect("host");
    s.put_host(&HostRecord { host_id: "plain".into(), ..Default::default() }).expect("host");
    let gold = s.resolve_series("gold", &key("host", "m")).expect("resolve");
    let gold_ctr = s.resolve_series("gold", &key("container/c1", "m")).expect("resolve");
    let plain = s.resolve_series("plain", &key("host", "m")).expect("resolve");
    let ctr = s.resolve_series("plain", &key("container/c1", "m")).expect("resolve");
    let ids = [gold, gold_ctr, plain, ctr];
    // Three clusters of 10 minutes at 10 s: 10 days, 3 hours and 10 minutes old.
    let clusters = [now - 10 * DAY, now - 3 * HOUR, now - 10 * MIN];
    for &c in &clusters {
        let mut pts = Vec::new();
        for i in 0..60 {
            for &id in &ids {
                pts.push((id, c + i * 10_000, i as f64));
            }
        }
        put(&*s, &pts);
    }
    s.seal_all_and_compact().expect("seal");
    let st = s.maintain(now).expect("maintain");
    assert!(st.blocks_expired > 0);
    assert!(st.rollups_expired > 0);
    let present = |id: SeriesId| -> Vec<bool> {
        clusters.iter().map(|&c| !s.read_range(id, c, c + 10 * MIN).expect("read").is_empty()).collect()
    };
    let full = |id: SeriesId, c: i64| s.read_range(id, c, c + 10 * MIN).expect("read").len() == 60;
    let rolled = |id: SeriesId| -> Vec<bool> {
        clusters.iter().map(|&c| !s.read_rollups(id, c, c + 10 * MIN).expect("rollups").is_empty()).collect()
    };
    // Gold host: the label rule wins even for its container series.
    for id in [gold, gold_ctr] {
        assert_eq!(present(id), vec![true, true, true], "series {id}");
        assert!(clusters.iter().all(|&c| full(id, c)));
        assert_eq!(rolled(id), vec![true, true, true]);
    }
    // Plain host series: defaults (raw 1 day, rollups 7 days).
    assert_eq!(present(plain), vec![false, true, true]);
    assert!(full(plain, clusters[1]) && full(plain, clusters[2]));
    assert_eq!(rolled(plain), vec![false, true, true]);
    // Plain host container: prefix rule (raw 2 hours, rollups 1 day).
    assert_eq!(present(ctr), vec![false, false, true]);
    assert!(full(ctr, clusters[2]));
    assert_eq!(rolled(ctr), vec![false, true, true]);
    let again = s.maintain(now).expect("maintain");
    assert_eq!((again.blocks_expired, again.rollups_expired), (0, 0));
}

/// Host records are upserted and listed by host id.
pub(crate) fn hosts_are_upserted_and_listed(make: Make<'_>) {
    let s = make(StoreOptions::default());
    assert!(s.hosts().expect("hosts").is_empty());
    let mut b = HostRecord {
        host_id: "b".into(),
        labels: BTreeMap::from([("role".to_owned(), "db".to_owned())]),
        agent_version: "0.1.0".into(),
        capabilities: vec!["resize".into()],
        first_seen_ms: T0,
        last_seen_ms: T0,
        incarnation: 1,
    };
    let a = HostRecord { host_id: "a".into(), ..Default::default() };
    s.put_host(&b).expect("put");
    s.put_host(&a).expect("put");
    b.last_seen_ms = T0 + 1000;
    b.incarnation = 2;
    b.labels.insert("zone".into(), "z1".into());
    s.put_host(&b).expect("put");
    assert_eq!(s.hosts().expect("hosts"), vec![a, b]);
}

/// Audit records are append-only by sequence, scanned in sequence order from any point,
/// and the last one is found; an existing sequence is never overwritten.
pub(crate) fn audit_records_are_append_only_and_ordered(make: Make<'_>) {
    let s = make(StoreOptions::default());
    assert_eq!(s.audit_last().expect("last"), None);
    assert!(s.audit_scan(0, 10).expect("scan").is_empty());
    // Sequence numbers whose little-endian order differs from numeric order.
    let seqs = [1u64, 2, 255, 256, 65_536, u64::MAX - 1];
    for &q in &seqs {
        s.audit_append(q, format!("rec-{q}").as_bytes()).expect("append");
    }
    match s.audit_append(256, b"overwrite") {
        Err(StoreError::AuditSeqTaken(256)) => {}
        other => panic!("overwriting seq 256 must be refused, got {other:?}"),
    }
    let all = s.audit_scan(0, usize::MAX).expect("scan");
    assert_eq!(all.iter().map(|(q, _)| *q).collect::<Vec<_>>(), seqs);
    assert_eq!(all[3].1, b"rec-256");
    let page = s.audit_scan(3, 2).expect("scan");
    assert_eq!(page, vec![(255, b"rec-255".to_vec()), (256, b"rec-256".to_vec())]);
    assert!(s.audit_scan(u64::MAX, 5).expect("scan").is_empty());
    assert_eq!(s.audit_last().expect("last"), Some((u64::MAX - 1, format!("rec-{}", u64::MAX - 1).into_bytes())));
    assert!(s.audit_scan(0, 0).expect("scan").is_empty());
    // Backwards: strictly below `before_seq`, newest first.
    let back = |before: u64, limit: usize| -> Vec<u64> {
        s.audit_scan_back(before, limit).expect("scan back").into_iter().map(|(q, _)| q).collect()
    };
    assert_eq!(back(u64::MAX, 10), vec![u64::MAX - 1, 65_536, 256, 255, 2, 1]);
    assert_eq!(back(256, 2), vec![255, 2]);
    assert_eq!(back(257, 1), vec![256]);
    assert_eq!(s.audit_scan_back(3, 5).expect("scan back")[0], (2, b"rec-2".to_vec()));
    assert!(back(1, 10).is_empty());
    assert!(back(0, 10).is_empty());
    assert!(back(u64::MAX, 0).is_empty());
}

/// Model state: put replaces, get and delete by key, prefix listing in key order (a
/// prefix never matches its neighbours), bad keys refused.
pub(crate) fn model_state_is_a_keyed_map_with_prefix_listing(make: Make<'_>) {
    let s = make(StoreOptions::default());
    assert_eq!(s.model_state_get("bandit/oom").expect("get"), None);
    s.model_state_put("bandit/oom", b"v1").expect("put");
    s.model_state_put("bandit/oom", b"v2").expect("put");
    s.model_state_put("bandit/disk", b"d").expect("put");
    s.model_state_put("bandit", b"bare").expect("put");
    s.model_state_put("banditz/x", b"z").expect("put");
    s.model_state_put("threshold/memory", &[0xff, 0]).expect("put");
    assert_eq!(s.model_state_get("bandit/oom").expect("get"), Some(b"v2".to_vec()));
    let listed = s.model_state_list("bandit/").expect("list");
    assert_eq!(listed, vec![("bandit/disk".to_owned(), b"d".to_vec()), ("bandit/oom".to_owned(), b"v2".to_vec())]);
    assert_eq!(s.model_state_list("").expect("list all").len(), 5);
    assert_eq!(s.model_state_list("threshold/").expect("list")[0].1, vec![0xff, 0]);
    s.model_state_delete("bandit/oom").expect("delete");
    s.model_state_delete("never-there").expect("deleting a missing key is fine");
    assert_eq!(s.model_state_get("bandit/oom").expect("get"), None);
    assert_eq!(s.model_state_list("bandit/").expect("list").len(), 1);
    assert!(matches!(s.model_state_put("", b"x"), Err(StoreError::InvalidKey(_))));
    assert!(matches!(s.model_state_put(&"k".repeat(513), b"x"), Err(StoreError::InvalidKey(_))));
}

/// Generates one `#[test]` per conformance check for a store factory
/// `fn(StoreOptions) -> Box<dyn Store>`.
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::storage::conformance::conformance_tests!(@each $make;
            resolve_is_idempotent_and_distinct_per_host,
            write_and_read_range_boundaries,
            duplicate_timestamps_keep_last_written,
            latest_tracks_newest_point,
            progress_is_atomic_with_points,
            nan_points_are_not_stored,
            maintain_seals_and_reads_identically,
            late_data_merges_into_sealed_range,
            rollups_cover_sealed_and_open,
            retention_follows_rules_and_defaults,
            hosts_are_upserted_and_listed,
            audit_records_are_append_only_and_ordered,
            model_state_is_a_keyed_map_with_prefix_listing,
        );
    };
    (@each $make:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::storage::conformance::$name(&$make);
            }
        )*
    };
}
pub(crate) use conformance_tests;
