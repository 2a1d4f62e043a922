//! The files of a new project, per language, embedded in the binary, and the one substitution
//! they go through: `{{key}}` is replaced by the value of `key`, nothing else is touched.

/// One file of a project: where it goes, its template, and whether it is a script to run.
pub(crate) struct Template {
    pub(crate) path: &'static str,
    pub(crate) text: &'static str,
    pub(crate) executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: false,
    }
}

/// A Rust project on the SDK.
pub(crate) const RUST: &[Template] = &[
    file("Cargo.toml", include_str!("templates/rust/Cargo.toml.tmpl")),
    file("src/lib.rs", include_str!("templates/rust/lib.rs.tmpl")),
    file("src/main.rs", include_str!("templates/rust/main.rs.tmpl")),
    file(
        "tests/plugin.rs",
        include_str!("templates/rust/plugin_test.rs.tmpl"),
    ),
    file("README.md", include_str!("templates/rust/README.md.tmpl")),
    file("Dockerfile", include_str!("templates/rust/Dockerfile.tmpl")),
    file(".dockerignore", "target/\n"),
    file(".gitignore", "/target\n"),
];

/// A Python project on grpcio and the `.proto`.
pub(crate) const PYTHON: &[Template] = &[
    // The contract this broker speaks, as it was built: the project generates its stubs from it.
    file(
        "proto/tandem/plugin/v1/plugin.proto",
        include_str!("../../../proto/tandem/plugin/v1/plugin.proto"),
    ),
    Template {
        path: "generate.sh",
        text: include_str!("templates/python/generate.sh.tmpl"),
        executable: true,
    },
    // The example's pins (its comment holds here too), so both Python plugins of this tree
    // are built and tested alike, with one virtualenv in the tests.
    file(
        "requirements.txt",
        include_str!("../../../examples/python-acl/requirements.txt"),
    ),
    file("rules.py", include_str!("templates/python/rules.py.tmpl")),
    file("plugin.py", include_str!("templates/python/plugin.py.tmpl")),
    file(
        "test_rules.py",
        include_str!("templates/python/test_rules.py.tmpl"),
    ),
    file("README.md", include_str!("templates/python/README.md.tmpl")),
    file(
        "Dockerfile",
        include_str!("templates/python/Dockerfile.tmpl"),
    ),
    file(".dockerignore", ".venv/\ngen/\n**/__pycache__/\n"),
    file(".gitignore", "gen/\n.venv/\n__pycache__/\n*.pyc\n"),
];

/// `text` with every `{{key}}` of `values` replaced by its value.
pub(crate) fn render(text: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(text.to_owned(), |text, (key, value)| {
        text.replace(&format!("{{{{{key}}}}}"), value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys `create` fills in; a template naming any other would keep `{{...}}` literally.
    const KEYS: [&str; 5] = [
        "name",
        "crate_name",
        "sdk_dependency",
        "repository",
        "project_dir",
    ];

    #[test]
    fn templates_name_only_known_keys() {
        for template in RUST.iter().chain(PYTHON) {
            let values: Vec<(&str, &str)> = KEYS.iter().map(|k| (*k, "x")).collect();
            let rendered = render(template.text, &values);
            assert!(
                !rendered.contains("{{"),
                "{}: an unknown placeholder is left in:\n{rendered}",
                template.path
            );
        }
    }

    #[test]
    fn render_replaces_every_occurrence() {
        assert_eq!(
            render("{{a}}-{{b}}-{{a}} {c}", &[("a", "1"), ("b", "2")]),
            "1-2-1 {c}"
        );
    }
}
