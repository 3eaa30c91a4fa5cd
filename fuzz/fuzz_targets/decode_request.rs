//! Fuzzes the request decoder: any bytes, fed whole or in arbitrary pieces, must decode to
//! the same commands, never panic, and never report ranges outside the input. (Lines near
//! the 64 KiB inline limit are the one place where, as in Redis, the outcome may depend on
//! how bytes arrive; the fuzzer's inputs stay far below it.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::resp::{Decoded, Limits, RequestDecoder};

const LIMITS: Limits = Limits {
    max_bulk_bytes: 1 << 20,
    max_multibulk_len: 1 << 16,
    unauthenticated: false,
};

/// Decodes everything in `input`, delivered in pieces whose sizes come from `cuts`.
fn decode_all(input: &[u8], cuts: &[u8]) -> (Vec<Vec<Vec<u8>>>, Option<String>) {
    let mut dec = RequestDecoder::new();
    let mut commands = Vec::new();
    let mut start = 0; // first byte of the command in progress
    let mut avail = 0; // bytes delivered so far
    let mut cut = cuts.iter().cycle();
    loop {
        let step = if cuts.is_empty() { input.len() } else { *cut.next().unwrap() as usize + 1 };
        avail = (avail + step).min(input.len());
        loop {
            let buf = &input[start..avail];
            match dec.decode(buf, &LIMITS) {
                Decoded::Command { consumed, inline } => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    let src = if inline { dec.inline_bytes() } else { buf };
                    let args = dec.args().iter().map(|r| src[r.clone()].to_vec()).collect();
                    commands.push(args);
                    start += consumed;
                }
                Decoded::Skip { consumed } => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    start += consumed;
                }
                Decoded::Incomplete => break,
                Decoded::Invalid(e) => return (commands, Some(e.to_string())),
            }
        }
        if avail == input.len() {
            return (commands, None);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize % 8).min(data.len());
    let (cuts, input) = data.split_at(split);
    let whole = decode_all(input, &[]);
    let pieces = decode_all(input, cuts);
    assert_eq!(whole, pieces, "decoding must not depend on how bytes arrive");
});
