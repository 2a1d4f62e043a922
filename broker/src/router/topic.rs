//! Topic names and filters: validation and matching, by the rules of MQTT 4.7.

/// Whether `filter` is a well-formed topic filter: non-empty, `#` only as the whole
/// last level, `+` only as a whole level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    if filter.starts_with(SHARE_PREFIX) {
        // `$share/{group}/{filter}`: a group name without wildcards, then a filter.
        return split_shared(filter).is_some_and(|(_, inner)| valid_filter(inner));
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// What starts a shared subscription's filter (MQTT 5 section 4.8.2; 3.1.1 clients use
/// the same form, as Mosquitto and EMQX let them).
pub const SHARE_PREFIX: &str = "$share/";

/// A shared subscription's group name and filter: `Some(("g", "a/b"))` for
/// `$share/g/a/b`; `None` when `filter` is not a shared one or its group name is
/// empty or holds a wildcard.
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    let (group, inner) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return None;
    }
    Some((group, inner))
}

/// The filter the topic-check chain is asked about for a subscription: a shared
/// subscription's inner filter (what its member will receive), so that rules written
/// for topics apply to `$share/{group}/...` alike; any other filter as it is.
pub fn checked_filter(filter: &str) -> &str {
    split_shared(filter).map_or(filter, |(_, inner)| inner)
}

/// Number of levels in a topic name or filter: one more than its `/` separators
/// (`a` has one, `a/b` two, `/` two, `a//` three).
pub fn levels(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

/// `Err(levels)` when `topic` has more than `max` levels (`mqtt.max_topic_levels`), else
/// `Ok(())`. Counting stops just past the bound, so a hostile 10,000-level topic
/// costs no more than a legal one to refuse; the error reports the full count for logs.
pub fn check_levels(topic: &str, max: usize) -> Result<(), usize> {
    let mut seen = 1;
    for b in topic.bytes() {
        if b == b'/' {
            seen += 1;
            if seen > max {
                return Err(levels(topic));
            }
        }
    }
    Ok(())
}

/// Whether `filter` has a wildcard level.
pub fn has_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// Whether the topic name `topic` matches the (valid) filter `filter`.
///
/// A topic starting with `$` is not matched by a filter whose first level is a wildcard
/// (MQTT-4.7.2-1), so `#` does not see `$SYS/...`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_validation() {
        for ok in [
            "a", "a/b", "#", "+", "a/#", "+/+", "a/+/c", "/", "a//b", "+/#", "$SYS/#",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a/b#", "a+", "a/+b", "#/a", "##"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }

    #[test]
    fn level_counting_and_bound() {
        for (t, n) in [
            ("a", 1),
            ("a/b", 2),
            ("/", 2),
            ("a//", 3),
            ("#", 1),
            ("+/+/#", 3),
        ] {
            assert_eq!(levels(t), n, "{t}");
        }
        assert_eq!(check_levels("a/b/c", 3), Ok(()));
        assert_eq!(check_levels("a/b/c/d", 3), Err(4));
        assert_eq!(check_levels("a", 1), Ok(()));
        assert_eq!(check_levels("/", 1), Err(2));
        let deep = format!("a{}", "/".repeat(10_000));
        assert_eq!(check_levels(&deep, 128), Err(10_001));
        assert_eq!(check_levels(&deep, 10_001), Ok(()));
    }

    #[test]
    fn matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("#", "/a", true),
            ("+/+", "/a", true),
            ("+", "/a", false),
            ("/+", "/a", true),
            ("#", "$SYS/broker", false),
            ("+/broker", "$SYS/broker", false),
            ("$SYS/#", "$SYS/broker/uptime", true),
            ("$SYS/+/uptime", "$SYS/broker/uptime", true),
            ("a/b/c", "a/b", false),
            ("sport/tennis/#", "sport/tennis", true),
        ];
        for (f, t, want) in cases {
            assert_eq!(matches(f, t), want, "{f} vs {t}");
        }
    }
}
