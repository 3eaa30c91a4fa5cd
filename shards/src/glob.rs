//! Redis's glob-style pattern matching (`KEYS`, `SCAN MATCH`): `*`, `?`, `[abc]`, `[^a]`,
//! `[a-z]` and `\` escapes, on bytes.

/// Whether `text` matches `pattern` as Redis's `stringmatchlen` decides.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    // KEYS and SCAN take a lone `*` as "everything" without matching; Redis's matcher
    // itself never matches an empty string against a non-empty pattern.
    if pattern == b"*" {
        return true;
    }
    if text.is_empty() {
        return pattern.is_empty();
    }
    // Iterative matcher with one backtrack point for the last `*`: linear in practice and
    // immune to the exponential blow-up of naive recursion on patterns like `a*a*a*a*b`.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class_matches(pattern, p, text[t]) {
                        if ok {
                            p = next;
                            t += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches one byte against the class starting at `pattern[start] == b'['`. Returns whether
/// it matched and the index after the class. An unterminated class runs to the end of the
/// pattern, as in Redis.
fn class_matches(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < pattern.len() && pattern[i] == b'^';
    if negate {
        i += 1;
    }
    let mut hit = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            hit |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
            let (lo, hi) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= pattern[i] == c;
            i += 1;
        }
    }
    let next = if i < pattern.len() { i + 1 } else { i };
    Some((hit != negate, next))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_table() {
        // Cases from the Redis KEYS documentation and util.c behaviour.
        for (p, t, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h*llo", "hllo", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:age", false),
            (
                "a*a*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            ("*x", "abcx", true),
            ("*x", "abcxy", false),
            ("[", "[", false),
            // Redis quirks: `a-]` is a range from ']' to 'a' and the class runs on.
            ("h[a-]llo", "hallo", false),
            ("h[a-]llo", "h-llo", false),
            ("**", "", false),
            ("*", "", true),
            ("", "", true),
        ] {
            assert_eq!(matches(p.as_bytes(), t.as_bytes()), want, "{p} ~ {t}");
        }
    }
}
