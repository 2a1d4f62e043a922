//! The session attributes this plugin sets in `Authenticate` and reads back in every topic
//! check: their names, shared by the claim mapping, the configuration's check of mapped
//! names, and the topic role.

use tandem_plugin::Action;

/// Prefix of the attributes this plugin sets itself (a mapped attribute may not use it).
pub(crate) const ATTRIBUTE_PREFIX: &str = "jwt.";
/// The token's `exp`, so topic checks stop allowing once the token has expired.
pub(crate) const EXP_ATTRIBUTE: &str = "jwt.exp";
/// The value of `username_claim`.
pub(crate) const USERNAME_ATTRIBUTE: &str = "jwt.username";

/// The attribute holding the filter list for `action`.
pub(crate) fn action_attribute(action: Action) -> &'static str {
    match action {
        Action::Publish => "jwt.publish",
        Action::Subscribe => "jwt.subscribe",
        Action::Receive => "jwt.receive",
    }
}
