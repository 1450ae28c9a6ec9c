//! Rendezvous (highest-random-weight) hashing: every caller that sees the same key and the same
//! set of endpoints picks the same endpoint, and removing an endpoint only moves the keys that
//! were on it. The seed is fixed so that every gateway replica agrees.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Fixed seed shared by every replica; changing it reshuffles all placements.
const SEED: u64 = 0x6c6c_6d5f_726f_7574;

/// Weight of `endpoint` for `key`. Endpoints are identified by their stable name (e.g. `ip:port`).
pub fn weight(key: &[u8], endpoint: &str) -> u64 {
    let key_hash = xxh3_64_with_seed(key, SEED);
    xxh3_64_with_seed(endpoint.as_bytes(), key_hash)
}

/// Index of the endpoint with the highest weight for `key`, or `None` when there is none.
/// Ties (equal 64-bit weights) go to the lexicographically smaller name, so order never matters.
pub fn pick<'e, I>(key: &[u8], endpoints: I) -> Option<usize>
where
    I: IntoIterator<Item = &'e str>,
{
    let key_hash = xxh3_64_with_seed(key, SEED);
    let mut best: Option<(u64, &str, usize)> = None;
    for (index, name) in endpoints.into_iter().enumerate() {
        let w = xxh3_64_with_seed(name.as_bytes(), key_hash);
        let better = match best {
            None => true,
            Some((bw, bname, _)) => w > bw || (w == bw && name < bname),
        };
        if better {
            best = Some((w, name, index));
        }
    }
    best.map(|(_, _, index)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: [&str; 4] = [
        "10.0.0.1:8000",
        "10.0.0.2:8000",
        "10.0.0.3:8000",
        "10.0.0.4:8000",
    ];

    #[test]
    fn same_key_same_endpoint_regardless_of_order() {
        let a = pick(b"hello", PODS).unwrap();
        let mut reversed = PODS;
        reversed.reverse();
        let b = pick(b"hello", reversed).unwrap();
        assert_eq!(PODS[a], reversed[b]);
    }

    #[test]
    fn keys_spread_over_all_endpoints() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[pick(format!("prompt {i}").as_bytes(), PODS).unwrap()] += 1;
        }
        for c in counts {
            assert!((700..1300).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let without_last = &PODS[..3];
        for i in 0..1000 {
            let key = format!("k{i}");
            let before = pick(key.as_bytes(), PODS).unwrap();
            let after = pick(key.as_bytes(), without_last.iter().copied()).unwrap();
            if before != 3 {
                assert_eq!(
                    before, after,
                    "key {key} moved although its endpoint stayed"
                );
            }
        }
    }

    #[test]
    fn empty_set_has_no_pick() {
        assert_eq!(pick(b"x", std::iter::empty()), None);
    }
}
