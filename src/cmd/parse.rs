//! Argument parsing shared by the command families.

use tessera_shards::value::parse_canonical_i64;

pub fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// An integer argument as Redis's `getLongLongFromObject` accepts it.
pub fn int(arg: &[u8]) -> Option<i64> {
    parse_canonical_i64(arg)
}

pub fn text(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}
