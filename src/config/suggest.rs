//! The closest known word to a misspelt one, for error messages and warnings
//! that say "did you mean ...?".

/// Levenshtein distance in characters: the fewest single-character
/// insertions, deletions and substitutions that turn `a` into `b`.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // One row of the classic table: row[j] = distance(a[..i], b[..j]).
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The candidate nearest to `word` (the first on a tie), if it is within
/// `max` edits: further than that, a suggestion would only confuse.
pub fn closest<'a>(word: &str, candidates: &[&'a str], max: usize) -> Option<&'a str> {
    candidates
        .iter()
        .map(|&c| (distance(word, c), c))
        .filter(|&(d, _)| d <= max)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook recursion, exponential but obviously right: the
    /// reference the one-row version is checked against.
    fn reference(a: &[char], b: &[char]) -> usize {
        match (a, b) {
            ([], _) => b.len(),
            (_, []) => a.len(),
            ([x, a2 @ ..], [y, b2 @ ..]) => {
                let substitute = reference(a2, b2) + usize::from(x != y);
                substitute
                    .min(reference(a2, b) + 1)
                    .min(reference(a, b2) + 1)
            }
        }
    }

    #[test]
    fn distance_counts_insertions_deletions_and_substitutions() {
        let cases = [
            ("", "", 0),
            ("", "abc", 3),
            ("abc", "", 3),
            ("UPSTREM", "UPSTREAM", 1),
            ("UPSTREAM", "UPSTREM", 1),
            ("kitten", "sitting", 3),
            ("flaw", "lawn", 2),
            ("inf", "info", 1),
            ("été", "ete", 2),
        ];
        for (a, b, d) in cases {
            assert_eq!(distance(a, b), d, "{a:?} -> {b:?}");
        }
    }

    #[test]
    fn distance_agrees_with_the_textbook_recursion() {
        let words = [
            "",
            "a",
            "ab",
            "ba",
            "abc",
            "acb",
            "LOG",
            "LOGS",
            "LOG_FORMAT",
            "FORMAT_LOG",
        ];
        for a in words {
            for b in words {
                let (ca, cb): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
                assert_eq!(distance(a, b), reference(&ca, &cb), "{a:?} -> {b:?}");
            }
        }
    }

    #[test]
    fn closest_picks_the_nearest_within_the_limit() {
        let known = ["SAFEDELETE_LOG", "SAFEDELETE_LISTEN", "SAFEDELETE_UPSTREAM"];
        assert_eq!(
            closest("SAFEDELETE_UPSTREM", &known, 3),
            Some("SAFEDELETE_UPSTREAM")
        );
        assert_eq!(
            closest("SAFEDELETE_LOGS", &known, 3),
            Some("SAFEDELETE_LOG")
        );
        assert_eq!(closest("SAFEDELETE_EVERYTHING", &known, 3), None);
    }
}
