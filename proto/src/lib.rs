//! The Tandem plugin contract: Rust types and gRPC code generated from
//! `tandem/plugin/v1/plugin.proto` (package `tandem.plugin.v1`).
//!
//! Tandem's plugins are gRPC servers that implement the `Plugin` service; the broker is their
//! client. This crate is the wire form shared by both sides: the broker's plugin host uses
//! [`v1::plugin_client::PluginClient`], the Rust SDK (`tandem-plugin`) implements
//! [`v1::plugin_server::Plugin`]. Plugin authors in Rust should depend on the SDK, which wraps these
//! raw protobuf types in domain types; authors in other languages generate their own code from the
//! `.proto`, which is the source of truth and documents every field.
//!
//! The code is generated at build time by `protox` and `tonic-prost-build`: no `protoc` is needed.
//!
//! # Layout
//! - `tandem/plugin/v1/plugin.proto`: the contract (service, messages, enums), documented inline.
//! - `build.rs`: compiles the `.proto` with `protox` and generates code with `tonic-prost-build`.
//! - [`v1`]: the generated messages, enums, [`v1::plugin_client`] and [`v1::plugin_server`].
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptor set, for gRPC reflection or dynamic decoding.
//!
//! # Example
//! ```
//! use tandem_proto::v1::{TopicFilterRequest, Action};
//!
//! let request = TopicFilterRequest {
//!     topic: "sensors/1/temp".into(),
//!     action: Action::Publish.into(),
//!     client_id: "sensor-1".into(),
//!     ..Default::default()
//! };
//! assert_eq!(request.action(), Action::Publish);
//! ```

/// Generated code for the protobuf package `tandem.plugin.v1`: messages, enums, the
/// `plugin_client` and `plugin_server` modules. Field documentation comes from the `.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tandem.plugin.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of `tandem/plugin/v1/plugin.proto` and its
/// imports (with source info), for gRPC server reflection or dynamic decoding.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tandem_plugin_v1_descriptor.bin"));

/// The fully qualified name of the plugin service, as used in gRPC paths and health checks.
pub const PLUGIN_SERVICE_NAME: &str = "tandem.plugin.v1.Plugin";

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn descriptor_set_holds_the_plugin_service() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decodes");
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "tandem.plugin.v1")
            .expect("our file is in the set");
        let service = &file.service[0];
        assert_eq!(
            format!("{}.{}", file.package(), service.name()),
            PLUGIN_SERVICE_NAME
        );
        let rpcs: Vec<_> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(rpcs, ["Describe", "Authenticate", "TopicFilter", "Events"]);
    }

    #[test]
    fn generated_service_name_matches() {
        assert_eq!(
            <v1::plugin_server::PluginServer<Unused> as tonic::server::NamedService>::NAME,
            PLUGIN_SERVICE_NAME
        );
    }

    #[test]
    fn optional_credentials_keep_presence() {
        let with_empty = v1::AuthenticateRequest {
            username: Some(String::new()),
            password: None,
            ..Default::default()
        };
        let decoded =
            v1::AuthenticateRequest::decode(with_empty.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.username.as_deref(), Some(""));
        assert_eq!(decoded.password, None);
    }

    #[test]
    fn zero_values_are_the_unspecified_enums() {
        let response = v1::TopicFilterResponse::default();
        assert_eq!(response.verdict(), v1::Verdict::Unspecified);
        assert_eq!(response.cache_ttl_ms, 0);
        assert_eq!(v1::Verdict::Abstain.as_str_name(), "VERDICT_ABSTAIN");
    }

    struct Unused;
}
