//! The two decision RPCs, what a plugin decides in them, and why a call can end
//! without a decision.
//!
//! These small types are shared by every part of the host (the call path counts by
//! them, the chains combine them, `$SYS` and `/metrics` name them), so they live in a
//! file of their own that imports nothing from the host: any part can use them without
//! making a circle.

/// A plugin's decision, after `on_error` was applied to failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allows.
    Allow = 0,
    /// Denies.
    Deny = 1,
    /// No opinion.
    Abstain = 2,
}

impl Verdict {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Abstain => "abstain",
        }
    }
}

/// The two decision RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `Authenticate`.
    Authenticate = 0,
    /// `TopicFilter`.
    TopicFilter = 1,
}

impl Rpc {
    /// The RPC's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rpc::Authenticate => "authenticate",
            Rpc::TopicFilter => "topic_filter",
        }
    }
}

/// Why a plugin call did not produce a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The deadline passed.
    Deadline = 0,
    /// Transport failure: connection refused, reset, lost.
    Unavailable = 1,
    /// The plugin answered a non-OK status.
    Status = 2,
    /// The plugin answered `VERDICT_UNSPECIFIED` (or an unknown verdict).
    Unspecified = 3,
    /// The plugin was at its `max_concurrency`.
    Shed = 4,
    /// No replica is up: the call was not attempted.
    CircuitOpen = 5,
}

impl ErrorKind {
    /// Every kind, in index order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Deadline,
        ErrorKind::Unavailable,
        ErrorKind::Status,
        ErrorKind::Unspecified,
        ErrorKind::Shed,
        ErrorKind::CircuitOpen,
    ];

    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Deadline => "deadline",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Status => "status",
            ErrorKind::Unspecified => "unspecified",
            ErrorKind::Shed => "shed",
            ErrorKind::CircuitOpen => "circuit_open",
        }
    }
}
