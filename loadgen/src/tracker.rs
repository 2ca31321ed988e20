//! Per-publisher sequence tracking: loss, duplicates and reordering, in bounded memory.
//!
//! A subscriber keeps one `SequenceTracker` per publisher it hears from. Each remembers the
//! highest sequence seen and a window of the `WINDOW_BITS` sequences below it, so a late
//! message inside the window is told apart from a duplicate. Older than the window, a message
//! cannot be classified and is counted as a duplicate (the conservative choice: it never hides
//! a loss).

/// How many sequences below the highest seen are remembered.
pub const WINDOW_BITS: u64 = 128;

/// What one subscriber observed from one publisher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequenceCounts {
    /// Messages received, duplicates included.
    pub received: u64,
    /// Sequences skipped and not (yet) filled in by a late arrival.
    pub gaps: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages that arrived after a higher sequence from the same publisher.
    pub out_of_order: u64,
}

impl SequenceCounts {
    /// Adds another set of counts to this one.
    pub fn add(&mut self, other: &SequenceCounts) {
        self.received += other.received;
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
    }
}

/// Tracks the sequence numbers of one publisher as seen by one subscriber.
#[derive(Clone, Debug, Default)]
pub struct SequenceTracker {
    /// One past the highest sequence seen; 0 before the first message.
    next: u64,
    /// Bit `k` set: sequence `next - 1 - k` was received.
    window: u128,
    counts: SequenceCounts,
}

impl SequenceTracker {
    /// Records one received sequence number.
    pub fn record(&mut self, sequence: u64) {
        self.counts.received += 1;
        if sequence >= self.next {
            let skipped = sequence - self.next;
            self.counts.gaps += skipped;
            let shift = skipped + 1;
            self.window = if shift >= WINDOW_BITS {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.next = sequence + 1;
            return;
        }
        let distance = self.next - 1 - sequence;
        if distance >= WINDOW_BITS {
            self.counts.duplicates += 1;
            return;
        }
        let bit = 1u128 << distance;
        if self.window & bit != 0 {
            self.counts.duplicates += 1;
        } else {
            self.window |= bit;
            self.counts.out_of_order += 1;
            self.counts.gaps -= 1;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> SequenceCounts {
        self.counts
    }

    /// One past the highest sequence seen (how many the publisher had sent, at least).
    #[cfg(test)]
    pub fn next_expected(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sequences: &[u64]) -> SequenceCounts {
        let mut tracker = SequenceTracker::default();
        for &sequence in sequences {
            tracker.record(sequence);
        }
        tracker.counts()
    }

    #[test]
    fn in_order_has_no_anomalies() {
        let counts = run(&[0, 1, 2, 3, 4]);
        assert_eq!(
            counts,
            SequenceCounts {
                received: 5,
                ..SequenceCounts::default()
            }
        );
    }

    #[test]
    fn detects_loss() {
        let counts = run(&[0, 1, 4, 5]);
        assert_eq!(counts.gaps, 2);
        assert_eq!(counts.duplicates, 0);
        assert_eq!(counts.out_of_order, 0);
    }

    #[test]
    fn late_message_fills_its_gap() {
        let counts = run(&[0, 2, 1, 3]);
        assert_eq!(counts.gaps, 0);
        assert_eq!(counts.out_of_order, 1);
        assert_eq!(counts.duplicates, 0);
    }

    #[test]
    fn detects_duplicates() {
        let counts = run(&[0, 1, 1, 2, 0]);
        assert_eq!(counts.duplicates, 2);
        assert_eq!(counts.gaps, 0);
        assert_eq!(counts.out_of_order, 0);
    }

    #[test]
    fn first_message_late_in_the_stream_counts_earlier_ones_lost() {
        let counts = run(&[3]);
        assert_eq!(counts.gaps, 3);
    }

    #[test]
    fn beyond_the_window_is_a_duplicate_not_a_hidden_loss() {
        let mut tracker = SequenceTracker::default();
        tracker.record(0);
        tracker.record(1000);
        tracker.record(5);
        let counts = tracker.counts();
        assert_eq!(counts.gaps, 999);
        assert_eq!(counts.duplicates, 1);
        assert_eq!(tracker.next_expected(), 1001);
    }

    #[test]
    fn large_jumps_do_not_overflow_the_window() {
        let counts = run(&[0, 200, 199, 201]);
        assert_eq!(counts.gaps, 198);
        assert_eq!(counts.out_of_order, 1);
    }
}
