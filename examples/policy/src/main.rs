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
//!         alice: { password: secret, attributes: { tenant: acme } }
//!       auth_default: abstain           # unknown users: allow | deny | abstain
//!       rules:                          # first match wins; {attr} is a session attribute
//!         - { action: any, filter: "tenants/{tenant}/#", verdict: allow }
//!         - { action: publish, filter: "#", verdict: deny, reason: "read-only" }
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
