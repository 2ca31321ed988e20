//! Frames of the durable log: `[length u32 LE][CRC32C of the payload u32 LE][payload]`.
//!
//! A crash can leave the last frame half written (its header, or its payload, cut short, or
//! its bytes not all on disk): that *torn tail* is cut off at start with a log line. A frame
//! that fails its checksum with more frames after it is damage in the middle, which no crash
//! of ours produces: the start stops, naming the file, unless the operator asks to repair.

/// Bytes before each payload.
pub const HEADER: usize = 8;

/// The largest payload a frame may carry (a longer length is damage, not a record).
pub const PAYLOAD_MAX: usize = 256 << 20;

/// Appends one frame holding `payload` to `out`.
pub fn append(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() <= PAYLOAD_MAX);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one frame whose payload `encode` writes (no scratch copy of the payload).
pub fn append_with(out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    encode(out);
    let len = out.len() - start - HEADER;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// How a scan of a log ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a whole, valid frame.
    Clean,
    /// The last frame is incomplete or fails its checksum: the valid log is `len` bytes.
    TornTail {
        /// Length of the valid prefix.
        len: usize,
    },
    /// A frame at `offset` is damaged and more bytes follow it.
    Damaged {
        /// Where the damaged frame starts.
        offset: usize,
    },
}

/// Calls `each(offset, payload)` for every valid frame of `log`, in order, and says how the
/// log ended. `each` returning an error stops the scan as damage at that frame.
pub fn scan<E>(
    log: &[u8],
    mut each: impl FnMut(usize, &[u8]) -> Result<(), E>,
) -> Result<End, (usize, E)> {
    let mut at = 0;
    while at < log.len() {
        let rest = &log[at..];
        if rest.len() < HEADER {
            return Ok(End::TornTail { len: at });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > PAYLOAD_MAX {
            // A length no writer produces: torn if nothing whole could follow, else damage.
            return Ok(if at + HEADER + PAYLOAD_MAX >= log.len() {
                End::TornTail { len: at }
            } else {
                End::Damaged { offset: at }
            });
        }
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            return Ok(End::TornTail { len: at });
        };
        if crc32c::crc32c(payload) != crc {
            let last = at + HEADER + len == log.len();
            return Ok(if last {
                End::TornTail { len: at }
            } else {
                End::Damaged { offset: at }
            });
        }
        each(at, payload).map_err(|error| (at, error))?;
        at += HEADER + len;
    }
    Ok(End::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut log = Vec::new();
        for p in payloads {
            append(&mut log, p);
        }
        log
    }

    fn read(log: &[u8]) -> (Vec<Vec<u8>>, End) {
        let mut seen = Vec::new();
        let end = scan::<()>(log, |_, p| {
            seen.push(p.to_vec());
            Ok(())
        })
        .expect("no callback error");
        (seen, end)
    }

    #[test]
    fn round_trip_and_append_with_agree() {
        let mut a = Vec::new();
        append(&mut a, b"hello");
        let mut b = Vec::new();
        append_with(&mut b, |out| out.extend_from_slice(b"hello"));
        assert_eq!(a, b);
        assert_eq!(read(&a), (vec![b"hello".to_vec()], End::Clean));
    }

    #[test]
    fn a_flipped_bit_in_the_middle_is_damage_and_at_the_end_a_torn_tail() {
        let log = frames(&[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        let mut middle = log.clone();
        middle[HEADER + 1] ^= 1;
        assert_eq!(read(&middle).1, End::Damaged { offset: 0 });
        let mut tail = log.clone();
        let last = tail.len() - 1;
        tail[last] ^= 1;
        let (seen, end) = read(&tail);
        assert_eq!(seen.len(), 2);
        assert_eq!(
            end,
            End::TornTail {
                len: 2 * HEADER + 6
            }
        );
    }

    #[test]
    fn a_huge_length_is_not_allocated() {
        let mut log = frames(&[b"ok".to_vec()]);
        log.extend_from_slice(&u32::MAX.to_le_bytes());
        log.extend_from_slice(&[0; 4]);
        assert_eq!(read(&log).1, End::TornTail { len: HEADER + 2 });
    }

    proptest! {
        /// Any cut of a valid log reads as a prefix of its frames, ending torn or clean.
        #[test]
        fn every_truncation_is_a_torn_tail(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let log = frames(&payloads);
            let at = cut.index(log.len() + 1);
            let (seen, end) = read(&log[..at]);
            prop_assert!(payloads.starts_with(&seen));
            match end {
                End::Clean => {
                    // The cut fell on a frame boundary.
                    let whole: usize = seen.iter().map(|p| HEADER + p.len()).sum();
                    prop_assert_eq!(whole, at);
                }
                End::TornTail { len } => prop_assert!(len <= at),
                End::Damaged { .. } => prop_assert!(false, "a cut is never damage"),
            }
        }

        /// Arbitrary bytes never panic the scanner.
        #[test]
        fn garbage_never_panics(log in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read(&log);
        }
    }
}
