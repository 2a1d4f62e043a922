//! What a plugin's name may be: a Cargo package name (the Rust project's package, binary and,
//! with `_` for `-`, library) that Cargo and crates.io accept, also used as the plugin's name in
//! `Describe` and the broker's YAML.

/// The longest name crates.io accepts.
const MAX_LEN: usize = 64;

/// Rust keywords (strict, reserved and edition 2024's `gen`): a library named so cannot be
/// written in `use`.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Crates every Rust program can already name: a library named so would be shadowed or shadow
/// them.
const STD_CRATES: &[&str] = &["alloc", "core", "proc_macro", "std", "test"];

/// Checks `name`; the error says why it is refused.
pub(crate) fn validate(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("it is empty".to_owned());
    };
    if name.len() > MAX_LEN {
        return Err(format!(
            "it is longer than {MAX_LEN} characters (crates.io's limit)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')))
    {
        return Err(format!(
            "it contains {c:?}: only lowercase ASCII letters, digits, `-` and `_` are allowed"
        ));
    }
    if !first.is_ascii_lowercase() {
        return Err("it must start with a letter".to_owned());
    }
    let crate_name = crate_name(name);
    if KEYWORDS.contains(&crate_name.as_str()) {
        return Err("it is a Rust keyword".to_owned());
    }
    if STD_CRATES.contains(&crate_name.as_str()) {
        return Err("it is the name of a crate of Rust's standard library".to_owned());
    }
    // Cargo refuses binary targets named like the directories of its target dir.
    if matches!(name, "build" | "deps" | "examples" | "incremental") {
        return Err("Cargo reserves it for a directory of its target dir".to_owned());
    }
    if matches!(crate_name.as_str(), "tandem_plugin" | "tandem_proto") {
        return Err("it names a crate of the SDK, which the plugin depends on".to_owned());
    }
    Ok(())
}

/// The library's name in Rust code: `-` becomes `_`.
pub(crate) fn crate_name(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_pass() {
        for ok in ["acl", "my-plugin", "auth_v2", "a", "tandem-acl"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let why = |name: &str| validate(name).unwrap_err();
        assert_eq!(why(""), "it is empty");
        assert!(why(&"a".repeat(65)).contains("longer than 64"));
        assert!(why("my plugin").contains("' '"));
        assert!(why("My-Plugin").contains("'M'"));
        assert!(why("über").contains("'ü'"));
        assert!(why("../x").contains("'.'"));
        assert_eq!(why("1st"), "it must start with a letter");
        assert_eq!(why("-x"), "it must start with a letter");
        assert_eq!(why("async"), "it is a Rust keyword");
        assert_eq!(
            why("proc-macro"),
            "it is the name of a crate of Rust's standard library"
        );
        assert!(why("tandem-plugin").contains("SDK"));
    }
}
