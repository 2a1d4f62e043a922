//! `tandem plugin new`: a standalone plugin project, in Rust (on the SDK) or in Python (on the
//! `.proto`), for a team to keep in a repository of its own.
//!
//! The project is small and works as it is: an `Authenticate` that lets in the usernames of an
//! allow-list file, a `TopicFilter` that keeps each client's publishing under
//! `devices/<username>/`, tests, a README saying how to run it behind the broker, a Dockerfile.
//!
//! A Rust project depends on the SDK by path when the Tandem source tree this binary was built
//! from is still where it was (or `--sdk` names one), else by git, from the repository in
//! `workspace.package.repository`: the SDK is not on crates.io yet. A Python project carries the
//! `.proto` this binary was built with.
//!
//! # Layout
//! - `mod.rs`: [`NewArgs`] (the command line), [`create`], [`Created`], [`ScaffoldError`].
//! - `name.rs`: what a plugin's name may be, and why one is refused.
//! - `templates.rs`: the files of each language, embedded, and the `{{key}}` substitution.
//! - `templates/`: the files themselves, named `.tmpl` so that no tool takes them for this
//!   crate's sources.

mod name;
mod templates;

use std::fmt;
use std::path::{Path, PathBuf};

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// On the Rust SDK, `tandem-plugin`.
    Rust,
    /// With grpcio, stubs generated from the `.proto`.
    Python,
}

impl Lang {
    /// The files of a project in this language.
    fn templates(self) -> &'static [templates::Template] {
        match self {
            Lang::Rust => templates::RUST,
            Lang::Python => templates::PYTHON,
        }
    }
}

/// `tandem plugin new NAME [--lang rust|python] [--dir DIR] [--sdk PATH]`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name, also its Cargo package and binary: lowercase ASCII letters, digits,
    /// `-` and `_`, starting with a letter.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// The directory to create; it must not exist or be empty. Default: `./NAME`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rust: the SDK (the `sdk-rust` directory of a Tandem source tree) to depend on by path.
    /// Default: the tree this binary was built from when it is still there, else the SDK's git
    /// repository.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// Why a project was not created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a package name.
    #[error("`{name}` cannot be a plugin's name: {why}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        why: String,
    },
    /// The target directory holds files: nothing is overwritten.
    #[error("{}: the directory is not empty; choose another with --dir", .0.display())]
    NotEmpty(PathBuf),
    /// `--sdk` does not name the SDK.
    #[error("--sdk {}: no Cargo.toml of package tandem-plugin there; give the sdk-rust directory of a Tandem source tree", .0.display())]
    NotTheSdk(PathBuf),
    /// `--sdk` was given for a language without an SDK.
    #[error("--sdk is for --lang rust: a Python plugin is built from the .proto it carries")]
    SdkWithoutRust,
    /// A file or directory could not be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// What could not be made or read.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A project just written.
#[derive(Debug)]
pub struct Created {
    /// Its directory (absolute).
    pub dir: PathBuf,
    /// Its language.
    pub lang: Lang,
    /// The files written, relative to `dir`.
    pub files: Vec<&'static str>,
    /// The Rust SDK dependency line written in `Cargo.toml` (none for Python).
    pub sdk_dependency: Option<String>,
}

impl fmt::Display for Created {
    /// What was made and what to run next, for the terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "created {}", self.dir.display())?;
        for file in &self.files {
            writeln!(f, "  {file}")?;
        }
        if let Some(dependency) = &self.sdk_dependency {
            writeln!(f, "SDK: {dependency}")?;
        }
        let next = match self.lang {
            Lang::Rust => "cargo test",
            Lang::Python => {
                "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt \
                 && PYTHON=.venv/bin/python ./generate.sh && .venv/bin/python -m unittest test_rules"
            }
        };
        writeln!(f, "next: cd {} && {next}", self.dir.display())?;
        write!(f, "README.md says how to run it behind tandem.")?;
        writeln!(f)
    }
}

/// Writes the project `args` describes. Refuses an invalid name and a non-empty directory before
/// writing anything, and never overwrites a file.
pub fn create(args: &NewArgs) -> Result<Created, ScaffoldError> {
    name::validate(&args.name).map_err(|why| ScaffoldError::InvalidName {
        name: args.name.clone(),
        why,
    })?;
    let sdk_dependency = match (args.lang, &args.sdk) {
        (Lang::Rust, sdk) => Some(sdk_dependency(sdk.as_deref())?),
        (Lang::Python, Some(_)) => return Err(ScaffoldError::SdkWithoutRust),
        (Lang::Python, None) => None,
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    prepare_dir(&dir)?;
    let dir = dir.canonicalize().map_err(io(&dir))?;

    let crate_name = name::crate_name(&args.name);
    let project_dir = dir.display().to_string();
    let values = [
        ("name", args.name.as_str()),
        ("crate_name", crate_name.as_str()),
        ("sdk_dependency", sdk_dependency.as_deref().unwrap_or("")),
        ("repository", env!("CARGO_PKG_REPOSITORY")),
        ("project_dir", project_dir.as_str()),
    ];
    let mut files = Vec::new();
    for template in args.lang.templates() {
        write_new(
            &dir.join(template.path),
            &templates::render(template.text, &values),
            template.executable,
        )?;
        files.push(template.path);
    }
    Ok(Created {
        dir,
        lang: args.lang,
        files,
        sdk_dependency,
    })
}

/// Makes `dir`, or accepts it when it exists and is empty.
fn prepare_dir(dir: &Path) -> Result<(), ScaffoldError> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ScaffoldError::NotEmpty(dir.to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io(dir))
        }
        Err(err) => Err(io(dir)(err)),
    }
}

/// Writes a file that must not exist yet, making its directory.
fn write_new(path: &Path, text: &str, executable: bool) -> Result<(), ScaffoldError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mode = if executable { 0o755 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))
}

/// The `tandem-plugin` line of a Rust project's Cargo.toml: a path dependency on `sdk`, else on
/// the SDK of the source tree this binary was built from if it is still there, else a git one.
fn sdk_dependency(sdk: Option<&Path>) -> Result<String, ScaffoldError> {
    let path = match sdk {
        Some(sdk) if is_sdk(sdk) => sdk.canonicalize().map_err(io(sdk))?,
        Some(sdk) => return Err(ScaffoldError::NotTheSdk(sdk.to_owned())),
        None => {
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-rust");
            match built_from.canonicalize() {
                Ok(path) if is_sdk(&path) => path,
                _ => {
                    let repository = toml_string(env!("CARGO_PKG_REPOSITORY"));
                    return Ok(format!("tandem-plugin = {{ git = {repository} }}"));
                }
            }
        }
    };
    let path = toml_string(&path.display().to_string());
    Ok(format!("tandem-plugin = {{ path = {path} }}"))
}

/// Whether `dir` holds the manifest of the package `tandem-plugin`.
fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|manifest| {
        manifest
            .lines()
            .any(|l| l.trim() == r#"name = "tandem-plugin""#)
    })
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
