//! `tandem-auth-jwt`: clients authenticate with a JWT as their MQTT password (HS* with a shared
//! secret, RS*/PS*/ES*/EdDSA with keys from a JWK set file or URL), and the token's claims become
//! session attributes and topic permissions. Configured from the broker's YAML
//! (`plugins.<alias>.config`, pushed by `Describe`); see README.md for every setting.
//!
//! # Layout
//! - `config.rs`: the settings, checked (and key files read) at `Describe`: fail closed.
//! - `keys.rs`: the HMAC secret and the JWK set, reloaded periodically and on an unknown `kid`.
//! - `verify.rs`: signature, algorithm, `exp`/`nbf`/`iss`/`aud`, with a reason per refusal.
//! - `auth.rs`: the authenticate role; `claims.rs`: claims to username check and attributes.
//! - `topics.rs`: the topic role: the token's publish/subscribe/receive filter lists.
//!
//! `--roles auth,topic` chooses the roles it declares (both by default).

mod attributes;
mod auth;
mod claims;
mod config;
mod jwt;
mod keys;
mod topics;
mod verify;

use tandem_plugin::{Plugin, Role};

use crate::jwt::Jwt;

fn main() -> Result<(), tandem_plugin::Error> {
    let roles = Role::from_args();
    let mut plugin =
        Plugin::new("tandem-auth-jwt", env!("CARGO_PKG_VERSION")).config::<config::Config>();
    if roles.contains(&Role::Authenticate) {
        plugin = plugin.authenticate(Jwt);
    }
    if roles.contains(&Role::TopicFilter) {
        plugin = plugin.topic_filter(Jwt);
    }
    plugin.run()
}
