//! The header every loadgen payload starts with: who sent it, its sequence number and when.
//!
//! Layout (little endian, 28 bytes): magic `u32`, run id `u32`, publisher id `u32`, sequence
//! `u64`, send time `u64` in nanoseconds since the run's epoch. The run id keeps messages of an
//! earlier run that a broker is still delivering (a backlog, a session taken over) out of the
//! figures of this one. The loadgen is one process, so publishers and
//! subscribers share the epoch `Instant` and the difference is a true end-to-end latency.
//! The rest of the payload, up to `--size`, is filler.

/// Marks a payload as ours, so traffic from other clients on the same topics is not mistaken for it.
pub const MAGIC: u32 = 0x524d_514c; // "RMQL"

/// Size of the header in bytes; payloads smaller than this are padded up to it.
pub const HEADER_BYTES: usize = 28;

/// What a payload header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Identifies the loadgen run (random per process).
    pub run: u32,
    /// Index of the publishing client within the run.
    pub publisher: u32,
    /// Per-publisher sequence number, starting at 0.
    pub sequence: u64,
    /// Send time in nanoseconds since the run's epoch.
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the first `HEADER_BYTES` of `out`; `out` must be at least that long.
    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.run.to_le_bytes());
        out[8..12].copy_from_slice(&self.publisher.to_le_bytes());
        out[12..20].copy_from_slice(&self.sequence.to_le_bytes());
        out[20..28].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads a header; `None` if the payload is too short or is not ours.
    pub fn read(payload: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_BYTES] = payload.get(..HEADER_BYTES)?.try_into().ok()?;
        let word = |range: std::ops::Range<usize>| -> u64 {
            let mut buffer = [0u8; 8];
            buffer[..range.len()].copy_from_slice(&bytes[range]);
            u64::from_le_bytes(buffer)
        };
        if word(0..4) != u64::from(MAGIC) {
            return None;
        }
        Some(Header {
            run: word(4..8) as u32,
            publisher: word(8..12) as u32,
            sequence: word(12..20),
            sent_ns: word(20..28),
        })
    }

    /// Rewrites only the sequence and send time of a header already in place (the hot path).
    pub fn patch(out: &mut [u8], sequence: u64, sent_ns: u64) {
        out[12..20].copy_from_slice(&sequence.to_le_bytes());
        out[20..28].copy_from_slice(&sent_ns.to_le_bytes());
    }
}

/// A run id that differs between runs: process id mixed with the wall clock.
pub fn new_run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as u32
}

/// The payload length actually used for a requested `--size`: at least the header.
pub fn effective_size(requested: usize) -> usize {
    requested.max(HEADER_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let header = Header {
            run: 9,
            publisher: 77,
            sequence: u64::MAX - 3,
            sent_ns: 123_456_789,
        };
        let mut payload = vec![0xaa; 64];
        header.write(&mut payload);
        assert_eq!(Header::read(&payload), Some(header));
        Header::patch(&mut payload, 5, 6);
        assert_eq!(
            Header::read(&payload),
            Some(Header {
                run: 9,
                publisher: 77,
                sequence: 5,
                sent_ns: 6
            })
        );
    }

    #[test]
    fn rejects_foreign_and_short_payloads() {
        assert_eq!(Header::read(b"hello"), None);
        assert_eq!(Header::read(&[0u8; 40]), None);
        assert_ne!(new_run_id(), 0);
        let mut payload = [0u8; HEADER_BYTES];
        Header {
            run: 0,
            publisher: 1,
            sequence: 2,
            sent_ns: 3,
        }
        .write(&mut payload);
        assert!(Header::read(&payload[..HEADER_BYTES - 1]).is_none());
    }

    #[test]
    fn small_sizes_grow_to_the_header() {
        assert_eq!(effective_size(0), HEADER_BYTES);
        assert_eq!(effective_size(64), 64);
    }
}
