//! The event trace: every client action and every packet a client receives, hashed in order
//! (the run's fingerprint), with the latest lines kept to show where a promise broke.

use std::collections::VecDeque;

/// Lines kept for a failure report.
const KEPT: usize = 60;

/// A running hash of the events and the last few of them.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    events: u64,
    recent: VecDeque<String>,
    /// Print every event as it happens (`--verbose`).
    pub echo: bool,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            recent: VecDeque::with_capacity(KEPT),
            echo: false,
        }
    }
}

impl Trace {
    /// Records one event of step `step`.
    pub fn event(&mut self, step: u64, line: String) {
        // FNV-1a over the step and the line: stable across runs, platforms and Rust versions
        // (std's hasher is not).
        for byte in step.to_le_bytes().iter().chain(line.as_bytes()) {
            self.hash ^= u64::from(*byte);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.events += 1;
        if self.echo {
            println!("{step:>7} {line}");
        }
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("{step:>7} {line}"));
    }

    /// The fingerprint of everything recorded so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Events recorded.
    pub fn len(&self) -> u64 {
        self.events
    }

    /// The latest events, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &String> {
        self.recent.iter()
    }
}
