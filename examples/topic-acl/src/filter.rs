//! MQTT topic filters: validation, matching a topic, and whether one filter covers another.
//!
//! Everything here works on `/`-separated levels of plain strings (no allocation on the match
//! paths). The `$` rule of MQTT 3.1.1 section 4.7.2 applies throughout: a filter whose first level
//! is a wildcard (`+` or `#`) matches no topic whose first level starts with `$`.

use std::fmt;

/// Why a string is not a valid topic filter (or topic name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FilterError {
    /// The empty string is neither a filter nor a topic.
    Empty,
    /// `#` somewhere other than alone on the last level (`a/#/b`, `a#`).
    MisplacedHash,
    /// `+` not alone on its level (`a+`, `+a/b`).
    MisplacedPlus,
    /// A NUL character (forbidden by MQTT 1.5.3).
    Nul,
    /// A wildcard in a topic name (publish or receive).
    WildcardInTopic,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterError::Empty => "it is empty",
            FilterError::MisplacedHash => "`#` must be alone on the last level (as in `a/#`)",
            FilterError::MisplacedPlus => "`+` must be alone on its level (as in `a/+/c`)",
            FilterError::Nul => "it contains a NUL character",
            FilterError::WildcardInTopic => "a topic name cannot contain `+` or `#`",
        })
    }
}

/// Checks that `filter` is a valid MQTT topic filter.
pub(crate) fn validate_filter(filter: &str) -> Result<(), FilterError> {
    if filter.is_empty() {
        return Err(FilterError::Empty);
    }
    if filter.contains('\0') {
        return Err(FilterError::Nul);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(FilterError::MisplacedHash);
        }
        if level.contains('+') && level != "+" {
            return Err(FilterError::MisplacedPlus);
        }
    }
    Ok(())
}

/// Checks that `topic` is a valid MQTT topic name (what is published or received).
pub(crate) fn validate_topic(topic: &str) -> Result<(), FilterError> {
    if topic.is_empty() {
        return Err(FilterError::Empty);
    }
    if topic.contains('\0') {
        return Err(FilterError::Nul);
    }
    if topic.contains(['+', '#']) {
        return Err(FilterError::WildcardInTopic);
    }
    Ok(())
}

// Matching and coverage are the SDK's (one implementation for every plugin); the tests
// below keep checking them against brute force.
pub(crate) use tandem_plugin::filter::{filter_covers as covers, topic_matches as matches};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation_rejects_misplaced_wildcards() {
        for ok in [
            "a", "a/b", "#", "a/#", "+", "+/+/c", "/", "/#", "$SYS/#", "a//b",
        ] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_filter(""), Err(FilterError::Empty));
        assert_eq!(validate_filter("a/#/b"), Err(FilterError::MisplacedHash));
        assert_eq!(validate_filter("a#"), Err(FilterError::MisplacedHash));
        assert_eq!(validate_filter("#/"), Err(FilterError::MisplacedHash));
        assert_eq!(validate_filter("a+"), Err(FilterError::MisplacedPlus));
        assert_eq!(validate_filter("a/+b/c"), Err(FilterError::MisplacedPlus));
        assert_eq!(validate_filter("a\0b"), Err(FilterError::Nul));
        assert_eq!(validate_topic("a/+"), Err(FilterError::WildcardInTopic));
        assert_eq!(validate_topic(""), Err(FilterError::Empty));
        assert_eq!(validate_topic("a//b"), Ok(()));
    }

    #[test]
    fn matching_follows_the_spec() {
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+", ""));
        assert!(matches("+/+", "/"));
        assert!(matches("/+", "/TopicA"));
        assert!(!matches("+", "a/b"));
        assert!(!matches("a/+", "a"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("a/$x", "a/$x"));
        assert!(
            matches("a/+", "a/$x"),
            "the $ rule is for the first level only"
        );
    }

    #[test]
    fn coverage_is_set_inclusion() {
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+", "a"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(covers("a/#", "a/#"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/+/#", "a/b"));
        assert!(!covers("a/+/#", "a/#"));
        assert!(!covers("a/+/#", "a"));
        assert!(covers("#", "#"));
        assert!(covers("#", "+/x"));
        assert!(covers("#", "/#"));
        assert!(covers("+/#", "#"));
        assert!(covers("#", "+/#"));
        assert!(covers("/+/#", "/#"));
        assert!(!covers("a/+/#", "a/#"));
        assert!(!covers("+/+/#", "#"));
        assert!(!covers("#", "$SYS/x"));
        assert!(!covers("+/x", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x"));
        assert!(!covers("$SYS/#", "#"));
        assert!(!covers("test/nosubscribe", "+/+"));
        assert!(covers("+/+", "test/nosubscribe"));
    }

    /// Levels from a small alphabet, so that random filters and topics often meet.
    const LEVELS: [&str; 5] = ["a", "b", "", "$s", "z"];

    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![
            4 => proptest::sample::select(&LEVELS[..]).prop_map(str::to_owned),
            2 => Just("+".to_owned()),
        ];
        (proptest::collection::vec(level, 1..5), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(&LEVELS[..]), 1..7)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("a topic is not empty", |t| !t.is_empty())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Soundness: whatever `covers` grants, `allowed` really matches.
        #[test]
        fn covered_filters_match_only_allowed_topics(
            allowed in filter_strategy(),
            requested in filter_strategy(),
            topics in proptest::collection::vec(topic_strategy(), 32),
        ) {
            prop_assume!(validate_filter(&allowed).is_ok() && validate_filter(&requested).is_ok());
            if covers(&allowed, &requested) {
                for topic in &topics {
                    prop_assert!(
                        !matches(&requested, topic) || matches(&allowed, topic),
                        "{requested} ⊆ {allowed} was claimed, but {topic} matches only {requested}"
                    );
                }
            }
        }
    }

    /// Completeness, exhaustively for short filters: `covers` says yes exactly when no topic of
    /// up to one level deeper than their literal parts tells them apart. A level outside the filters'
    /// alphabet (`other`, `$other`) stands for every literal the filters do not name.
    #[test]
    fn coverage_is_exact_for_short_filters() {
        let alphabet = ["a", "$s", "", "+"];
        let mut filters = Vec::new();
        for depth in 1..=3 {
            let mut partial: Vec<Vec<&str>> = vec![vec![]];
            for _ in 0..depth {
                partial = partial
                    .into_iter()
                    .flat_map(|p| {
                        alphabet.iter().map(move |l| {
                            let mut p = p.clone();
                            p.push(*l);
                            p
                        })
                    })
                    .collect();
            }
            for p in partial {
                filters.push(p.join("/"));
                filters.push(format!("{}/#", p.join("/")));
            }
        }
        filters.push("#".to_owned());
        filters.retain(|f| validate_filter(f).is_ok());
        let topic_levels = ["a", "$s", "", "other", "$other"];
        let mut topics: Vec<String> = Vec::new();
        let mut layer: Vec<String> = vec![String::new()];
        for depth in 1..=4 {
            layer = layer
                .iter()
                .flat_map(|p| {
                    topic_levels.iter().map(move |l| {
                        if depth == 1 {
                            (*l).to_owned()
                        } else {
                            format!("{p}/{l}")
                        }
                    })
                })
                .collect();
            topics.extend(layer.iter().filter(|t| !t.is_empty()).cloned());
        }
        for allowed in &filters {
            for requested in &filters {
                let brute = topics
                    .iter()
                    .all(|t| !matches(requested, t) || matches(allowed, t));
                assert_eq!(
                    covers(allowed, requested),
                    brute,
                    "covers({allowed:?}, {requested:?})"
                );
            }
        }
    }
}
