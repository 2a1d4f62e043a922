//! The plugin's one handler type, serving both roles: `Authenticate` ([`auth`](crate::auth))
//! and `TopicFilter` ([`topics`](crate::topics)). It holds nothing; the state lives in the
//! configuration the SDK keeps per `Describe`.

/// The handlers of both roles; the state lives in the configuration.
pub(crate) struct Jwt;
