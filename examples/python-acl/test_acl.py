"""Unit tests of acl.py (no gRPC needed): python3 -m unittest test_acl"""

import unittest

from acl import Acl, ConfigError, filter_covers, filters_overlap, topic_matches, validate_filter


class TopicMatching(unittest.TestCase):
    def test_filters_match_topics_as_mqtt_says(self):
        yes = [
            ("a/b", "a/b"),
            ("a/+/c", "a/x/c"),
            ("a/+", "a/"),
            ("a/#", "a"),
            ("a/#", "a/b/c"),
            ("#", "anything/at/all"),
            ("+", "x"),
            ("+/+", "/x"),
            ("$SYS/#", "$SYS/uptime"),
            ("$SYS/+", "$SYS/uptime"),
        ]
        no = [
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("+", "a/b"),
            ("#", "$SYS/uptime"),
            ("+/uptime", "$SYS/uptime"),
            ("+", "$x"),
            ("a/b", "A/b"),
        ]
        for f, t in yes:
            self.assertTrue(topic_matches(f, t), f"{f} should match {t}")
        for f, t in no:
            self.assertFalse(topic_matches(f, t), f"{f} should not match {t}")

    def test_overlap_means_some_topic_matches_both(self):
        yes = [
            ("a/b", "a/b"),
            ("a/+", "+/b"),
            ("a/#", "#"),
            ("a/#", "a"),
            ("private/#", "+/x"),
            ("a/+/c", "a/b/#"),
            ("$SYS/#", "$SYS/+"),
        ]
        no = [
            ("a/b", "a/c"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("a/b/c", "a/+"),
            ("$SYS/#", "#"),
            ("$SYS/x", "+/x"),
            ("#", "$SYS/#"),
        ]
        for a, b in yes:
            self.assertTrue(filters_overlap(a, b), f"{a} and {b} should overlap")
            self.assertTrue(filters_overlap(b, a), f"{b} and {a} should overlap")
        for a, b in no:
            self.assertFalse(filters_overlap(a, b), f"{a} and {b} should not overlap")
            self.assertFalse(filters_overlap(b, a), f"{b} and {a} should not overlap")

    def test_cover_means_every_topic_of_the_filter_matches_the_rule(self):
        yes = [
            ("a/#", "a/+/b"),
            ("a/#", "a"),
            ("a/#", "a/#"),
            ("#", "#"),
            ("#", "a/+"),
            ("+/b", "x/b"),
            ("+/+", "+/b"),
            ("a/b", "a/b"),
            ("$SYS/#", "$SYS/+/x"),
        ]
        no = [
            ("a/#", "#"),
            ("a/+", "a/#"),
            ("a/+", "a"),
            ("a/b", "a/+"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
            ("a/+/#", "a/#"),
        ]
        for rule, f in yes:
            self.assertTrue(filter_covers(rule, f), f"{rule} should cover {f}")
        for rule, f in no:
            self.assertFalse(filter_covers(rule, f), f"{rule} should not cover {f}")

    def test_invalid_filters_are_named(self):
        self.assertIsNone(validate_filter("a/+/#"))
        self.assertIn("'#'", validate_filter("a/#/b"))
        self.assertIn("'#'", validate_filter("a#"))
        self.assertIn("'+'", validate_filter("a/b+"))
        self.assertIn("empty", validate_filter(""))


class Decisions(unittest.TestCase):
    def acl(self, **config):
        return Acl.from_config(config)

    def test_deny_wins_then_allow_then_default(self):
        acl = self.acl(
            default="deny",
            publish={"deny": ["sensors/secret"], "allow": ["sensors/#"]},
        )
        self.assertEqual(acl.decide("publish", "sensors/secret")[0], "deny")
        self.assertEqual(acl.decide("publish", "sensors/1/temp")[0], "allow")
        self.assertEqual(acl.decide("publish", "other")[0], "deny")
        # Rules are per action: nothing for receive, so the default decides.
        self.assertEqual(acl.decide("receive", "sensors/1/temp")[0], "deny")

    def test_subscribe_denies_on_overlap_and_allows_on_cover(self):
        acl = self.acl(default="abstain", subscribe={"deny": ["test/nosubscribe", "private/#"], "allow": ["public/#"]})
        self.assertEqual(acl.decide("subscribe", "test/nosubscribe")[0], "deny")
        self.assertEqual(acl.decide("subscribe", "test/+")[0], "deny")
        self.assertEqual(acl.decide("subscribe", "#")[0], "deny")
        self.assertEqual(acl.decide("subscribe", "$share/g/private/x")[0], "deny")
        self.assertEqual(acl.decide("subscribe", "public/+/x")[0], "allow")
        self.assertEqual(acl.decide("subscribe", "$share/g/public/a")[0], "allow")
        self.assertEqual(acl.decide("subscribe", "+/a")[0], "deny")  # could deliver private/a
        self.assertEqual(acl.decide("subscribe", "test/ok")[0], "abstain")
        self.assertEqual(acl.decide("subscribe", "$SYS/#")[0], "abstain")

    def test_placeholders_take_the_clients_own_names(self):
        acl = self.acl(default="deny", publish={"allow": ["users/{username}/#", "devices/{client_id}"]})
        self.assertEqual(acl.decide("publish", "users/alice/x", "alice", "c1")[0], "allow")
        self.assertEqual(acl.decide("publish", "users/bob/x", "alice", "c1")[0], "deny")
        self.assertEqual(acl.decide("publish", "devices/c1", "alice", "c1")[0], "allow")
        # No username, or one that would widen the filter: the rule does not apply.
        self.assertEqual(acl.decide("publish", "users//x", "", "c1")[0], "deny")
        self.assertEqual(acl.decide("publish", "users/a/x", "+", "c1")[0], "deny")

    def test_defaults_allow_without_rules(self):
        acl = self.acl()
        self.assertEqual(acl.decide("subscribe", "#"), ("allow", "no subscribe rule matches; default allow"))
        self.assertEqual(acl.cache_ttl_ms, 0)

    def test_bad_configs_say_where_and_what(self):
        cases = [
            ({"defualt": "allow"}, "unknown key(s) defualt"),
            ({"default": "maybe"}, "config.default"),
            ({"cache_ttl_ms": -1}, "config.cache_ttl_ms"),
            ({"cache_ttl_ms": 1.5}, "config.cache_ttl_ms"),
            ({"cache_ttl_ms": "10"}, "config.cache_ttl_ms"),
            ({"publish": ["a"]}, "config.publish: must be a mapping"),
            ({"publish": {"deny": "a"}}, "config.publish.deny: must be a list"),
            ({"publish": {"block": ["a"]}}, "config.publish: unknown key(s) block"),
            ({"subscribe": {"deny": ["ok", "a/#/b"]}}, "config.subscribe.deny[1]: 'a/#/b'"),
            ({"receive": {"allow": [3]}}, "config.receive.allow[0]"),
        ]
        for config, expected in cases:
            with self.assertRaises(ConfigError, msg=str(config)) as caught:
                Acl.from_config(config)
            self.assertIn(expected, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
