use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn args(name: &str, lang: Lang, dir: &Path) -> NewArgs {
    NewArgs {
        name: name.to_owned(),
        lang,
        dir: Some(dir.to_owned()),
        sdk: None,
    }
}

#[test]
fn a_rust_project_depends_on_the_sdk_it_was_built_with() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("acl");
    let created = create(&args("my-acl", Lang::Rust, &dir)).unwrap();
    assert_eq!(created.dir, dir.canonicalize().unwrap());
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk-rust")
        .canonicalize()
        .unwrap();
    let dependency = format!("tandem-plugin = {{ path = \"{}\" }}", sdk.display());
    assert!(
        read("Cargo.toml").contains(&dependency),
        "{}",
        read("Cargo.toml")
    );
    assert!(read("Cargo.toml").contains("name = \"my-acl\""));
    assert!(read("src/main.rs").contains("my_acl::plugin().run()"));
    assert!(read("tests/plugin.rs").contains("my_acl::plugin()"));
    assert!(read("README.md").contains(&format!("{}/users.txt", created.dir.display())));
    assert_eq!(created.files.len(), Lang::Rust.templates().len());
    assert!(created.to_string().contains("next: cd "));
}

#[test]
fn a_python_project_carries_the_contract_and_a_runnable_generate_script() {
    let tmp = tempfile::tempdir().unwrap();
    let created = create(&args("py-acl", Lang::Python, tmp.path())).unwrap();
    let proto = std::fs::read_to_string(created.dir.join("proto/tandem/plugin/v1/plugin.proto"));
    assert!(proto.unwrap().contains("package tandem.plugin.v1;"));
    let mode = std::fs::metadata(created.dir.join("generate.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "generate.sh is executable");
    let plugin = std::fs::read_to_string(created.dir.join("plugin.py")).unwrap();
    assert!(plugin.contains(r#"NAME = "py-acl""#));
    assert!(created.sdk_dependency.is_none());
}

#[test]
fn a_directory_with_files_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
    let err = create(&args("acl", Lang::Rust, tmp.path())).unwrap_err();
    assert!(matches!(err, ScaffoldError::NotEmpty(_)), "{err}");
    assert!(err.to_string().contains("not empty"));
    let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "nothing written");
}

#[test]
fn a_bad_name_is_refused_before_anything_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let err = create(&args("My Plugin", Lang::Python, &dir)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`My Plugin` cannot be a plugin's name: it contains 'M': only lowercase ASCII letters, \
         digits, `-` and `_` are allowed"
    );
    assert!(!dir.exists());
    for reserved in ["build", "deps", "examples", "incremental"] {
        let err = create(&args(reserved, Lang::Rust, &dir)).unwrap_err();
        assert!(err.to_string().contains("Cargo reserves it"), "{err}");
    }
    assert!(!dir.exists());
}

#[test]
fn sdk_must_name_the_sdk_and_only_for_rust() {
    let tmp = tempfile::tempdir().unwrap();
    let mut not_sdk = args("acl", Lang::Rust, &tmp.path().join("a"));
    not_sdk.sdk = Some(tmp.path().to_owned());
    assert!(matches!(create(&not_sdk), Err(ScaffoldError::NotTheSdk(_))));
    let mut python = args("acl", Lang::Python, &tmp.path().join("b"));
    python.sdk = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-rust"));
    assert!(matches!(
        create(&python),
        Err(ScaffoldError::SdkWithoutRust)
    ));
}

#[test]
fn toml_strings_are_escaped() {
    assert_eq!(toml_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
    assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
}
