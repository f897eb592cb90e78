//! Which live worker should own which partition.
//!
//! Capacity-bounded rendezvous hashing: every partition ranks the live
//! workers by a hash of (partition, worker) and goes to the best-ranked one
//! that still has room under ⌈P/N⌉. Every worker computes the same answer
//! from the same membership, owners are balanced, and a change of
//! membership moves few partitions.

use std::collections::BTreeMap;

fn score(partition: u16, worker: &str) -> u64 {
    // FNV-1a over the inputs, then a SplitMix64 finalizer for avalanche.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in partition.to_le_bytes().iter().chain(worker.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Partition → worker for `partitions` over `workers` (any order; duplicates
/// ignored). Empty if there are no workers.
pub fn assign(partitions: u16, workers: &[String]) -> BTreeMap<u16, String> {
    let mut live: Vec<&str> = workers.iter().map(String::as_str).collect();
    live.sort_unstable();
    live.dedup();
    let mut out = BTreeMap::new();
    if live.is_empty() {
        return out;
    }
    let cap = usize::from(partitions).div_ceil(live.len());
    let mut load: BTreeMap<&str, usize> = live.iter().map(|w| (*w, 0)).collect();
    for p in 0..partitions {
        let mut ranked: Vec<(u64, &str)> = live.iter().map(|w| (score(p, w), *w)).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let chosen = ranked
            .iter()
            .map(|(_, w)| *w)
            .find(|w| load[w] < cap)
            .expect("total capacity covers every partition");
        *load.get_mut(chosen).expect("known worker") += 1;
        out.insert(p, chosen.to_owned());
    }
    out
}

/// The partitions `me` should own.
pub fn desired(partitions: u16, workers: &[String], me: &str) -> Vec<u16> {
    assign(partitions, workers)
        .into_iter()
        .filter(|(_, w)| w == me)
        .map(|(p, _)| p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("worker-{i}-abcdef")).collect()
    }

    #[test]
    fn every_partition_has_one_owner_within_the_balance_bound() {
        for n in 1..=9 {
            let ws = names(n);
            let a = assign(64, &ws);
            assert_eq!(a.len(), 64);
            let cap = 64usize.div_ceil(n);
            for w in &ws {
                let owned = a.values().filter(|o| *o == w).count();
                assert!(owned <= cap, "{n} workers: {w} owns {owned} > {cap}");
            }
        }
    }

    #[test]
    fn adding_a_worker_moves_few_partitions() {
        let before = assign(64, &names(3));
        let after = assign(64, &names(4));
        let moved = (0..64).filter(|p| before[p] != after[p]).count();
        // Ideal is 16 (a quarter); allow the capacity reshuffle some slack.
        assert!(moved <= 32, "moved {moved}");
    }

    #[test]
    fn every_worker_computes_the_same_answer() {
        let mut ws = names(5);
        let a = assign(64, &ws);
        ws.reverse();
        ws.push(ws[0].clone());
        assert_eq!(a, assign(64, &ws));
        assert!(assign(8, &[]).is_empty());
    }
}
