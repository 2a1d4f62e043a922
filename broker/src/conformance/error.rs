//! Why a check run could not start: a file it was given, never the plugin (what the
//! plugin does wrong is a failed row of the report).

/// Why a check run could not start (a file it was given; nothing about the plugin).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// `--plugin-config` could not be read or is not a map.
    #[error("--plugin-config {path}: {message}")]
    PluginConfig {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The TLS files or token file could not be read, or the endpoint not used.
    #[error("{0}")]
    Setup(String),
}
