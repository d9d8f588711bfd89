//! Subjects and patterns: dot-separated tokens; in a pattern `*` matches one token and a last
//! `>` one or more (NATS's rules). Syntax is checked by `conclave_proto::validate::topic`.

/// Whether `subject` (no wildcards) matches `pattern`.
pub fn matches(pattern: &str, subject: &str) -> bool {
    overlap(pattern, subject)
}

/// Whether some subject matches both patterns (a subject is a pattern without wildcards).
pub fn overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    tokens_overlap(&a, &b)
}

fn tokens_overlap(a: &[&str], b: &[&str]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        // `>` needs at least one token on the other side.
        (Some((&">", _)), Some(_)) | (Some(_), Some((&">", _))) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((x, a_rest)), Some((y, b_rest))) => {
            (*x == "*" || *y == "*" || x == y) && tokens_overlap(a_rest, b_rest)
        }
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
