//! MQTT topic filters for plugin authors: whether a filter matches a topic name, and whether
//! one filter covers another (for granting a SUBSCRIBE: a subscription filter may be granted
//! only if every topic it can match is allowed, so `a/+` must not grant `a/#`).
//!
//! Both work on `/`-separated levels of valid filters and topic names (no allocation). The `$`
//! rule of MQTT 3.1.1 section 4.7.2 applies throughout: a filter whose first level is a
//! wildcard (`+` or `#`) matches no topic whose first level starts with `$`.

fn is_wildcard(level: &str) -> bool {
    level == "+" || level == "#"
}

/// Whether the (valid) filter matches the (valid) topic name, as an MQTT server routes:
/// `+` is exactly one level (possibly empty), `#` any number of levels including none, so `a/#`
/// matches `a`; a leading wildcard does not match a `$` topic.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    if topic.starts_with('$') && filter.split('/').next().is_some_and(is_wildcard) {
        return false;
    }
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic the (valid) filter `requested` can match is also matched by the (valid)
/// filter `allowed`: the set inclusion `topics(requested) ⊆ topics(allowed)`.
///
/// So `a/+` covers `a/b` and `a/+` but not `a/#` (which matches `a/b/c` and `a`); `a/#` covers
/// `a`, `a/#` and `a/+/c`; `#` covers `+/x` but not `$SYS/x`; `+/#` and `#` cover each other
/// (both match every topic of one level or more that does not start with `$`). Only valid topics
/// count: the empty string is none, so `/#` (whose parent would be it) equals `/+/#`.
pub fn filter_covers(allowed: &str, requested: &str) -> bool {
    let g: Vec<&str> = allowed.split('/').collect();
    let f: Vec<&str> = requested.split('/').collect();
    // A requested filter that can match `$` topics (its first level is a literal starting with
    // `$`) is covered only by an allowed filter naming that first level literally.
    if f[0].starts_with('$') && is_wildcard(g[0]) {
        return false;
    }
    let mut i = 0;
    loop {
        match (f.get(i).copied(), g.get(i).copied()) {
            // `allowed` matches everything below its first i levels, and the first i levels of
            // `requested` (literals or `+`) matched them.
            (_, Some("#")) => return true,
            // `requested` matches its parent topic (its first i levels) and anything below.
            // When that parent is not a topic (no levels, or the one empty level of `/#`, which
            // would be the empty string), `+/#` here matches exactly the same: `#` and `+/#`
            // are the same set, and so are `/#` and `/+/#`.
            (Some("#"), Some("+")) if g.len() == i + 2 && g[i + 1] == "#" => {
                return i == 0 || (i == 1 && f[0].is_empty());
            }
            // Otherwise `allowed` without `#` here cannot match arbitrarily deep topics.
            (Some("#"), Some(_)) => return false,
            (Some("+"), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(a), Some(b)) if b == "+" || a == b => {}
            (Some(_), Some(_)) => return false,
            // Same depth: every level covered.
            (None, None) => return true,
            // `requested` stops at i levels; `allowed` matches an i-level topic only by its
            // parent rule, `x/#` matching `x`.
            (None, Some(_)) => return g.len() == i + 1 && g[i] == "#",
            // `requested` matches deeper topics than `allowed` does.
            (Some(_), None) => return false,
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_follow_mqtt_rules() {
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
        assert!(topic_matches("a/+/c", "a/x/c"));
        assert!(topic_matches("a/+", "a/"));
        assert!(!topic_matches("a/+", "a"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "anything/at/all"));
        assert!(!topic_matches("#", "$SYS/uptime"));
        assert!(!topic_matches("+/uptime", "$SYS/uptime"));
        assert!(topic_matches("$SYS/#", "$SYS/uptime"));
    }
}
