//! Arrival order: purchases of one card must be served in increasing `sequence`.

/// Arrival-order violations of one card: the number of winners that are not
/// among the `k` lowest sequences of winners ∪ `ACTIVATION_CODES_NOT_AVAILABLE`
/// losers, where `k = min(stock, winners)` (= `stock` once the card sold out).
pub fn out_of_order(stock: u64, winners: &[u64], losers: &[u64]) -> u64 {
    let mut all: Vec<(u64, bool)> = winners.iter().map(|&s| (s, true)).collect();
    all.extend(losers.iter().map(|&s| (s, false)));
    // On a (buggy) sequence tie the loser sorts first, so the winner counts as late.
    all.sort_unstable();
    let k = usize::try_from(stock)
        .unwrap_or(usize::MAX)
        .min(winners.len());
    all.iter().skip(k).filter(|(_, won)| *won).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_sellout_has_no_violation() {
        assert_eq!(out_of_order(3, &[1, 2, 3], &[4, 5, 6]), 0);
        assert_eq!(out_of_order(3, &[], &[]), 0);
        assert_eq!(out_of_order(10, &[1, 2, 3], &[]), 0);
    }

    #[test]
    fn late_winners_are_counted() {
        // stock 3: lowest three are 1, 2 (winners) and 3 (loser) -> winner 5 is late.
        assert_eq!(out_of_order(3, &[1, 2, 5], &[3, 4, 6]), 1);
        // all winners behind all losers.
        assert_eq!(out_of_order(2, &[8, 9], &[1, 2, 3]), 2);
        // unsorted input.
        assert_eq!(out_of_order(2, &[9, 1], &[3, 2]), 1);
    }

    #[test]
    fn over_stock_and_short_sales_use_min_of_stock_and_winners() {
        // sold 4 with stock 3: the extra winner is beyond the 3 lowest.
        assert_eq!(out_of_order(3, &[1, 2, 3, 4], &[]), 1);
        // sold only 2 of 5 but a loser came first: one winner is late.
        assert_eq!(out_of_order(5, &[2, 3], &[1]), 1);
    }

    #[test]
    fn sequence_ties_count_against_the_winner() {
        assert_eq!(out_of_order(1, &[4], &[4]), 1);
    }
}
