"""Topic access rules for the Python ACL plugin: the configuration and MQTT topic matching.

Pure Python, no gRPC: the server in plugin.py calls `Acl.decide`, and test_acl.py tests it.

Configuration (the plugin's `config:` section in the broker's YAML, pushed by Describe):

    default: allow            # verdict when no rule matches: allow | deny | abstain
    cache_ttl_ms: 30000       # how long the broker may reuse an answer (0 = never)
    publish:   { deny: [...], allow: [...] }
    subscribe: { deny: [...], allow: [...] }
    receive:   { deny: [...], allow: [...] }

Every list holds MQTT topic filters (`+` one level, `#` the rest). `{username}` and
`{client_id}` in a filter stand for the client's own (a client whose name contains `/`, `+`
or `#` never matches such a rule). For each check, a matching deny rule denies; otherwise a
matching allow rule allows; otherwise `default` decides.

PUBLISH and RECEIVE are about a topic name: a rule matches when the rule, as a filter,
matches the topic. SUBSCRIBE is about a filter, and a rule is compared with the whole set of
topics that filter can match (a `$share/GROUP/` prefix is ignored):

- a deny rule refuses the subscription when the two overlap, that is when the subscription
  could deliver any topic the rule names (`deny: [private/#]` refuses `#` and `+/x` too);
- an allow rule grants it only when it covers the filter, that is when every topic the
  subscription could deliver is one the rule names (`allow: [a/#]` grants `a/+/b`, not `#`).

To let broad subscriptions in while keeping some topics from them, deny `receive` instead.
As in MQTT, a filter starting with a wildcard never matches a topic starting with `$`.
"""

VERDICTS = ("allow", "deny", "abstain")
ACTIONS = ("publish", "subscribe", "receive")
TOP_KEYS = {"default", "cache_ttl_ms", *ACTIONS}
LIST_KEYS = ("deny", "allow")
PLACEHOLDERS = ("{username}", "{client_id}")


class ConfigError(ValueError):
    """The configuration is not acceptable; the message says where and why."""


def validate_filter(text):
    """Returns None when `text` is a valid MQTT topic filter, else what is wrong with it."""
    if not isinstance(text, str):
        return "a topic filter must be a string"
    if text == "":
        return "a topic filter must not be empty"
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def topic_matches(filt, topic):
    """Whether the MQTT topic filter `filt` matches the topic name `topic`."""
    f_levels, t_levels = filt.split("/"), topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(f_levels):
        if level == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(t_levels) == len(f_levels)


def _dollar_mismatch(first_a, first_b):
    """A leading wildcard never matches a first level starting with `$`."""
    return (first_a in ("+", "#") and first_b.startswith("$")) or (
        first_b in ("+", "#") and first_a.startswith("$")
    )


def filters_overlap(a, b):
    """Whether some topic name is matched by both filters."""
    x, y = a.split("/"), b.split("/")
    if _dollar_mismatch(x[0], y[0]):
        return False
    for i in range(max(len(x), len(y))):
        xl = x[i] if i < len(x) else None
        yl = y[i] if i < len(y) else None
        if xl == "#" or yl == "#":
            return True
        if xl is None or yl is None:
            return False
        if xl != "+" and yl != "+" and xl != yl:
            return False
    return True


def filter_covers(rule, filt):
    """Whether every topic name matched by `filt` is also matched by `rule`."""
    r, f = rule.split("/"), filt.split("/")
    for i, rl in enumerate(r):
        fl = f[i] if i < len(f) else None
        if rl == "#":
            # The filter's remaining levels (if any) are all under the rule's '#', except that
            # a leading '#' in the rule does not reach `$` topics the filter names literally.
            return not (i == 0 and fl is not None and fl.startswith("$"))
        if fl is None or fl == "#":
            # The filter matches its parent level, or any depth: the rule is deeper.
            return False
        if rl == "+":
            if i == 0 and fl.startswith("$"):
                return False
            continue
        if fl != rl:  # a literal rule level covers only the same literal
            return False
    return len(f) == len(r)


def strip_share(filt):
    """`$share/GROUP/a/b` -> `a/b`; other filters unchanged."""
    if filt.startswith("$share/"):
        parts = filt.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return filt


class Acl:
    """A validated configuration. Build one with `Acl.from_config`."""

    def __init__(self, default, cache_ttl_ms, rules):
        self.default = default
        self.cache_ttl_ms = cache_ttl_ms
        # rules[action] = {"deny": [filters], "allow": [filters]}
        self.rules = rules

    @classmethod
    def from_config(cls, config):
        """Validates the pushed configuration (a dict from the Describe Struct)."""
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ConfigError("config: must be a mapping")
        unknown = sorted(set(config) - TOP_KEYS)
        if unknown:
            raise ConfigError(
                f"config: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(TOP_KEYS))}"
            )
        default = config.get("default", "allow")
        if default not in VERDICTS:
            raise ConfigError(f"config.default: {default!r} is not one of allow, deny, abstain")
        ttl = config.get("cache_ttl_ms", 0)
        # Struct numbers arrive as floats: accept whole, non-negative numbers only.
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0 or ttl != int(ttl) or ttl > 2**32 - 1:
            raise ConfigError(f"config.cache_ttl_ms: {ttl!r} is not a whole number of milliseconds")
        rules = {}
        for action in ACTIONS:
            section = config.get(action, {}) or {}
            if not isinstance(section, dict):
                raise ConfigError(f"config.{action}: must be a mapping with deny: and allow: lists")
            unknown = sorted(set(section) - set(LIST_KEYS))
            if unknown:
                raise ConfigError(f"config.{action}: unknown key(s) {', '.join(unknown)}; expected deny, allow")
            rules[action] = {}
            for key in LIST_KEYS:
                filters = section.get(key, []) or []
                if not isinstance(filters, list):
                    raise ConfigError(f"config.{action}.{key}: must be a list of topic filters")
                for i, filt in enumerate(filters):
                    problem = validate_filter(filt)
                    if problem:
                        raise ConfigError(f"config.{action}.{key}[{i}]: {filt!r}: {problem}")
                rules[action][key] = list(filters)
        return cls(default, int(ttl), rules)

    def decide(self, action, topic, username="", client_id=""):
        """Returns (verdict, reason): verdict is "allow", "deny" or "abstain"."""
        if action not in ACTIONS:
            return "deny", f"unknown action {action!r}"
        if action == "subscribe":
            topic = strip_share(topic)
        rules = self.rules[action]
        for verdict in LIST_KEYS:  # deny first: any matching deny wins
            for rule in rules[verdict]:
                pattern = _substitute(rule, username, client_id)
                if pattern is not None and self._rule_matches(action, verdict, pattern, topic):
                    return verdict, f"{action} {verdict} rule {rule!r}"
        return self.default, f"no {action} rule matches; default {self.default}"

    @staticmethod
    def _rule_matches(action, verdict, pattern, topic):
        if action != "subscribe":
            return topic_matches(pattern, topic)
        if verdict == "deny":
            return filters_overlap(pattern, topic)
        return filter_covers(pattern, topic)


def _substitute(rule, username, client_id):
    """Fills in {username} and {client_id}; None when a value would change the filter's shape."""
    if not any(p in rule for p in PLACEHOLDERS):
        return rule
    for placeholder, value in (("{username}", username), ("{client_id}", client_id)):
        if placeholder in rule:
            if not value or any(c in value for c in "/+#"):
                return None
            rule = rule.replace(placeholder, value)
    return rule
