//! `tandem-policy`: static authentication and topic rules, configured entirely from the
//! broker's YAML (`plugins.<alias>.config`, pushed by `Describe`).
//!
//! ```yaml
//! plugins:
//!   policy:
//!     endpoint: unix:///run/tandem/policy.sock
//!     command: [tandem-policy]
//!     config:
//!       users:                          # username -> password and session attributes
//!         alice: { password: secret, attributes: { tenant: acme },
//!                  connack_properties: [[plan, gold]] }   # MQTT 5 CONNACK user properties
//!       auth_default: abstain           # unknown users: allow | deny | abstain
//!       auth_client_reason: "bad credentials"   # MQTT 5 Reason String of a refused CONNECT
//!       rules:                          # first match wins; {attr} is a session attribute
//!         - { action: any, filter: "tenants/{tenant}/#", verdict: allow }
//!         - { action: publish, filter: "#", verdict: deny, reason: "read-only",
//!             reason_code: 0x97, client_reason: "this account is read-only" }
//!         - { action: subscribe, filter: "#", verdict: deny,   # MQTT 5 user property match
//!             user_property: [tier, free] }
//!       topic_default: abstain
//!       cache_ttl_ms: 30000
//! ```
//!
//! `--roles auth,topic` chooses the roles it declares (both by default), so one binary can
//! play an auth-only or a topic-only plugin in a chain. `delay_ms` makes it answer slowly,
//! to see deadlines and `on_error` at work.

mod policy;

use tandem_plugin::{Plugin, Role};

fn main() -> Result<(), tandem_plugin::Error> {
    let roles = Role::from_args();
    let mut plugin =
        Plugin::new("tandem-policy", env!("CARGO_PKG_VERSION")).config::<policy::Config>();
    if roles.contains(&Role::Authenticate) {
        plugin = plugin.authenticate(policy::Policy);
    }
    if roles.contains(&Role::TopicFilter) {
        plugin = plugin.topic_filter(policy::Policy);
    }
    plugin.run()
}
