//! Globs for names: `*` stands for any run of characters (none included), every other
//! character for itself. Anchored at both ends, so `sensor-*.example.com` does not match
//! `sensor-1.example.com.evil.test`, and `device-1` does not match `device-17`.
//!
//! There is no escape: a literal `*` in a name is matched by `*` (which matches anything), and
//! a name that merely contains `*` (a CN of `*`) matches only patterns that would match any
//! other text in its place.

/// Whether `text` matches the glob `pattern` (characters, not bytes).
///
/// The classic greedy match with one backtrack point: linear in practice, `O(p * t)` at worst,
/// with no recursion for hostile inputs such as many `*` against a long name.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // After the last `*` seen: where in the pattern to resume, and the text position it took.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((resume, taken)) = star {
            // Let the last `*` take one more character and try again from there.
            pi = resume;
            ti = taken + 1;
            star = Some((resume, taken + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// ASCII-case-insensitive [`glob_matches`], for DNS names and email addresses.
pub(crate) fn glob_matches_ignore_case(pattern: &str, text: &str) -> bool {
    glob_matches(&pattern.to_ascii_lowercase(), &text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_anchored_at_both_ends() {
        assert!(glob_matches("device-*", "device-17"));
        assert!(glob_matches("device-*", "device-"));
        assert!(!glob_matches("device-*", "xdevice-17"));
        assert!(!glob_matches("device-1", "device-17"), "no prefix match");
        assert!(!glob_matches("device-17", "device-1"));
        assert!(glob_matches("sensor-*.example.com", "sensor-1.example.com"));
        assert!(
            !glob_matches("sensor-*.example.com", "sensor-1.example.com.evil.test"),
            "a name that only starts like the pattern"
        );
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "anything/at+all#"));
        assert!(!glob_matches("", "a"));
        assert!(glob_matches("", ""));
        assert!(glob_matches("a*b*c", "a-b-b-c"));
        assert!(!glob_matches("a*b*c", "a-b-b-"));
        assert!(glob_matches("**", "x"));
        assert!(glob_matches("*x", "xxx"));
    }

    #[test]
    fn wildcard_characters_in_names_are_literal_text() {
        // A CN of `*`, `#`, `+` or `a/b` is a name like any other: only `*` in the pattern is
        // special, and only as the pattern's own wildcard.
        assert!(!glob_matches("device-*", "*"));
        assert!(glob_matches("*", "*"));
        assert!(!glob_matches("#", "device-1"));
        assert!(glob_matches("#", "#"));
        assert!(!glob_matches("+", "device-1"));
        assert!(glob_matches("a/*", "a/b"));
        assert!(!glob_matches("a", "a/b"));
    }

    #[test]
    fn characters_not_bytes() {
        assert!(glob_matches("gerät-*", "gerät-1"));
        assert!(glob_matches("*-ü", "ä-ü"));
        assert!(!glob_matches("?", "ä"), "no `?` wildcard");
    }

    #[test]
    fn case_folding_is_ascii_only_and_opt_in() {
        assert!(!glob_matches("*.Example.com", "a.example.com"));
        assert!(glob_matches_ignore_case("*.Example.com", "A.EXAMPLE.com"));
    }

    #[test]
    fn many_stars_against_a_long_name_finish() {
        let pattern = "*a".repeat(50) + "b";
        let text = "a".repeat(10_000);
        assert!(!glob_matches(&pattern, &text));
    }
}
