//! Subjects and patterns: dot-separated tokens; in a pattern `*` matches one token and a last
//! `>` one or more (NATS's rules). Syntax is checked by `conclave_proto::validate::topic`.

/// Whether `subject` (no wildcards) matches `pattern`.
pub fn matches(pattern: &str, subject: &str) -> bool {
    overlap(pattern, subject)
}

/// Whether some subject matches both patterns (a subject is a pattern without wildcards). Token
/// by token, without allocating: publishing routes every message through it.
pub fn overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (Some(a), Some(b));
    loop {
        match (a, b) {
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some(a_left), Some(b_left)) => {
                let (x, a_rest) = first_token(a_left);
                let (y, b_rest) = first_token(b_left);
                // `>` takes this token and any after it; the other side has this one.
                if x == ">" || y == ">" {
                    return true;
                }
                if !(x == "*" || y == "*" || x == y) {
                    return false;
                }
                (a, b) = (a_rest, b_rest);
            }
        }
    }
}

fn first_token(pattern: &str) -> (&str, Option<&str>) {
    match pattern.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (pattern, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_tokens() {
        let cases = [
            ("research.papers.new", "research.papers.new", true),
            ("research.*", "research.papers", true),
            ("research.*", "research.papers.new", false),
            ("research.>", "research.papers.new", true),
            ("research.>", "research", false),
            ("*.papers.*", "research.papers.new", true),
            (">", "a", true),
            ("a.b", "a.c", false),
        ];
        for (pattern, subject, expected) in cases {
            assert_eq!(matches(pattern, subject), expected, "{pattern} ~ {subject}");
        }
    }

    #[test]
    fn patterns_overlap_when_a_subject_matches_both() {
        let cases = [
            ("orders.>", "orders.*", true),
            ("orders.*", "orders.eu.paid", false),
            ("orders.*.paid", "orders.eu.*", true),
            ("orders", "orders.>", false),
            ("a.>", "b.>", false),
            (">", "x.y", true),
            ("*.x", "y.*", true),
        ];
        for (a, b, expected) in cases {
            assert_eq!(overlap(a, b), expected, "{a} ~ {b}");
            assert_eq!(overlap(b, a), expected, "{b} ~ {a}");
        }
    }
}
