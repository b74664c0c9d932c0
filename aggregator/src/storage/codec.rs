//! Encoding of a sealed block: the points of one series over a run of whole minutes.
//!
//! Layout (all integers big-endian):
//! ```text
//! version u8 (= BLOCK_VERSION) | count u32 | min_ts i64 | max_ts i64 | ts_len u32
//! | values_len u32 | pco(timestamps as i64) [ts_len bytes] | pco(values as f64) [values_len]
//! ```
//! Timestamps and values are compressed separately with pcodec's standalone format,
//! which is lossless: every `f64` comes back bit-exact (including `-0.0`). NaN is never
//! stored (the stores drop NaN points on write). Timestamps are strictly ascending.
//! Decoding checks every length and invariant and returns [`StoreError::Corrupt`] on
//! any mismatch; it never panics on bad input.

use super::StoreError;
use pco::ChunkConfig;
use pco::standalone::{simple_compress, simple_decompress};

/// Version byte of the block encoding.
pub const BLOCK_VERSION: u8 = 1;
/// Bytes before the compressed timestamps.
pub const HEADER_LEN: usize = 1 + 4 + 8 + 8 + 4 + 4;

/// What a block's header says, readable without decompressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    /// Number of points.
    pub count: u32,
    /// Timestamp of the first point.
    pub min_ts: i64,
    /// Timestamp of the last point.
    pub max_ts: i64,
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: "block", reason: reason.into() }
}

/// Encodes points (strictly ascending timestamps, no NaN, at least one point).
pub fn encode_block(points: &[(i64, f64)]) -> Result<Vec<u8>, StoreError> {
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => {
            return Err(StoreError::Engine("refusing to encode an empty block".to_owned()));
        }
    };
    if points.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(StoreError::Engine("block timestamps are not strictly ascending".to_owned()));
    }
    let count = u32::try_from(points.len())
        .map_err(|_| StoreError::Engine(format!("block of {} points is too large", points.len())))?;
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    let vals: Vec<f64> = points.iter().map(|p| p.1).collect();
    let config = ChunkConfig::default();
    let ts_bytes = simple_compress(&ts, &config).map_err(|e| StoreError::Engine(e.to_string()))?;
    let val_bytes = simple_compress(&vals, &config).map_err(|e| StoreError::Engine(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + ts_bytes.len() + val_bytes.len());
    out.push(BLOCK_VERSION);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&last.to_be_bytes());
    out.extend_from_slice(&(ts_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&(val_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&ts_bytes);
    out.extend_from_slice(&val_bytes);
    Ok(out)
}

/// Reads the header of an encoded block.
pub fn decode_header(b: &[u8]) -> Result<BlockHeader, StoreError> {
    if b.len() < HEADER_LEN {
        return Err(corrupt(format!("{} bytes, shorter than the header", b.len())));
    }
    if b[0] != BLOCK_VERSION {
        return Err(corrupt(format!("unknown block version {}", b[0])));
    }
    let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let i64_at = |i: usize| i64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let h = BlockHeader { count: u32_at(1), min_ts: i64_at(5), max_ts: i64_at(13) };
    if h.count == 0 || h.min_ts > h.max_ts || (h.count == 1 && h.min_ts != h.max_ts) {
        return Err(corrupt(format!("inconsistent header {h:?}")));
    }
    Ok(h)
}

/// Decodes a whole block, checking it against its header.
pub fn decode_block(b: &[u8]) -> Result<(BlockHeader, Vec<(i64, f64)>), StoreError> {
    let h = decode_header(b)?;
    let ts_len = u32::from_be_bytes(b[21..25].try_into().expect("4 bytes")) as usize;
    let val_len = u32::from_be_bytes(b[25..29].try_into().expect("4 bytes")) as usize;
    let body = &b[HEADER_LEN..];
    if ts_len.checked_add(val_len) != Some(body.len()) {
        return Err(corrupt(format!(
            "sections of {ts_len} + {val_len} bytes do not fill the {}-byte body",
            body.len()
        )));
    }
    let (ts_bytes, val_bytes) = body.split_at(ts_len);
    let ts: Vec<i64> = simple_decompress(ts_bytes).map_err(|e| corrupt(format!("timestamps: {e}")))?;
    let vals: Vec<f64> = simple_decompress(val_bytes).map_err(|e| corrupt(format!("values: {e}")))?;
    if ts.len() != h.count as usize || vals.len() != h.count as usize {
        return Err(corrupt(format!(
            "header says {} points, found {} timestamps and {} values",
            h.count,
            ts.len(),
            vals.len()
        )));
    }
    if ts.first() != Some(&h.min_ts) || ts.last() != Some(&h.max_ts) {
        return Err(corrupt("timestamps disagree with the header range"));
    }
    if ts.windows(2).any(|w| w[0] >= w[1]) {
        return Err(corrupt("timestamps are not strictly ascending"));
    }
    Ok((h, ts.into_iter().zip(vals).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<(i64, f64)> {
        (0..n)
            .map(|i| {
                let t = 1_700_000_000_000 + i as i64 * 1000 + (i as i64 % 3);
                (t, (i as f64 * 0.37).sin() * 1e6)
            })
            .collect()
    }

    fn bits(p: &[(i64, f64)]) -> Vec<(i64, u64)> {
        p.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    #[test]
    fn round_trips_bit_exact() {
        let mut pts = sample(1800);
        pts[3].1 = -0.0;
        pts[4].1 = 0.0;
        pts[5].1 = f64::INFINITY;
        pts[6].1 = f64::NEG_INFINITY;
        pts[7].1 = f64::MIN_POSITIVE / 3.0; // subnormal
        pts[8].1 = f64::MAX;
        let enc = encode_block(&pts).expect("encode");
        let (h, dec) = decode_block(&enc).expect("decode");
        assert_eq!(h, BlockHeader { count: 1800, min_ts: pts[0].0, max_ts: pts[1799].0 });
        assert_eq!(decode_header(&enc).expect("header"), h);
        assert_eq!(bits(&dec), bits(&pts));
        assert!(enc.len() < 1800 * 16 / 2, "should compress: {} bytes", enc.len());
    }

    #[test]
    fn round_trips_single_point_and_negative_times() {
        for pts in [vec![(-5, 1.5)], vec![(i64::MIN, 1.0), (0, 2.0), (i64::MAX, -0.0)]] {
            let (_, dec) = decode_block(&encode_block(&pts).expect("encode")).expect("decode");
            assert_eq!(bits(&dec), bits(&pts));
        }
    }

    #[test]
    fn refuses_to_encode_invalid_input() {
        assert!(encode_block(&[]).is_err());
        assert!(encode_block(&[(2, 1.0), (1, 1.0)]).is_err());
        assert!(encode_block(&[(1, 1.0), (1, 1.0)]).is_err());
    }

    #[test]
    fn truncated_input_is_an_error() {
        let enc = encode_block(&sample(300)).expect("encode");
        for n in 0..enc.len() {
            assert!(decode_block(&enc[..n]).is_err(), "truncated to {n} bytes decoded");
        }
    }

    #[test]
    fn corrupt_input_is_an_error_or_consistent_never_a_panic() {
        let enc = encode_block(&sample(200)).expect("encode");
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..enc.len() * 4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bad = enc.clone();
            let pos = i % bad.len();
            bad[pos] ^= (seed as u8) | 1;
            // Either an error or, if the flip landed in a value, a well-formed block.
            if let Ok((h, pts)) = decode_block(&bad) {
                assert_eq!(pts.len(), h.count as usize);
            }
        }
        let mut wrong_version = enc.clone();
        wrong_version[0] = 99;
        assert!(decode_block(&wrong_version).is_err());
        let mut extra = enc.clone();
        extra.extend_from_slice(&[1, 2, 3]);
        assert!(decode_block(&extra).is_err());
    }
}
