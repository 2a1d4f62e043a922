//! Tools the end-to-end tests install for themselves (Python virtualenvs, Node modules),
//! once per machine, in the target directory: paho-mqtt, MQTT.js, and the Python plugin
//! `examples/python-acl` with its generated stubs.

use std::fs::File;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The directory `<target>/<name>`, made by `make` unless it was made from the same
/// `recipe` before (a stamp file inside holds the recipe, so a changed requirements file
/// makes it again). Parallel test processes wait on a file lock beside it, so one makes it
/// and the others reuse it.
pub fn made_once(name: &str, recipe: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    let dir = target.join(name);
    let lock = File::create(target.join(format!("{name}.lock"))).expect("create the lock file");
    lock.lock().expect("lock the tool directory");
    let stamp = dir.join("tandem-recipe.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(recipe) {
        let _ = std::fs::remove_dir_all(&dir);
        make(&dir);
        std::fs::create_dir_all(&dir).expect("create the tool directory");
        std::fs::write(&stamp, recipe).expect("write the stamp");
    }
    dir
}

/// The `cargo` that runs these tests, without the variables it set for this test process
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...). Build scripts rerun when one of those
/// changes (ring's does, through cc), so a build started from a test with them would rebuild
/// ring, rustls, tonic and everything above them, and the next build outside would again.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
            .iter()
            .any(|p| key.starts_with(p))
            || matches!(
                &*key,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// Runs `cmd` and panics with its output, saying `what` it was for, unless it succeeds.
pub fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `tests/` directory of the repository (the tests crate's own).
fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `node_modules` holding MQTT.js (`tests/node/package.json`), made (or remade when
/// that file changes) in `<target>/mqttjs`. Needs Node.js and npm (`.ci/run` installs
/// Debian's).
pub fn mqttjs_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| {
        let package = std::fs::read_to_string(tests_dir().join("node/package.json"))
            .expect("read tests/node/package.json");
        made_once("mqttjs", &package, |dir| {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("package.json"), &package).unwrap();
            run(
                "npm install (Debian: apt-get install nodejs npm)",
                Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--prefix"])
                    .arg(dir),
            );
        })
        .join("node_modules")
    })
}

/// The pinned requirements of the Python plugins: `examples/python-acl`'s, which
/// `tandem plugin new --lang python` writes into the projects it makes.
pub fn grpc_requirements() -> PathBuf {
    tests_dir().join("../examples/python-acl/requirements.txt")
}

/// The Python of a virtualenv with grpcio and grpcio-tools ([`grpc_requirements`]), made (or
/// remade when the pins change) in `<target>/python-venv`.
pub fn grpc_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| virtualenv("python-venv", &grpc_requirements()).join("bin/python"))
}

/// The Python of a virtualenv with paho-mqtt (`tests/python/requirements.txt`), made (or
/// remade when the requirements change) in `<target>/paho-venv`.
pub fn paho_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        virtualenv("paho-venv", &tests_dir().join("python/requirements.txt")).join("bin/python")
    })
}

/// The virtualenv `<target>/<name>` with the pinned `requirements` installed, made once (and
/// remade when the file changes) by [`made_once`].
fn virtualenv(name: &str, requirements: &Path) -> PathBuf {
    let recipe = std::fs::read_to_string(requirements)
        .unwrap_or_else(|e| panic!("read {}: {e}", requirements.display()));
    made_once(name, &recipe, |venv| {
        run(
            "python3 -m venv (Debian needs the python3-venv package)",
            Command::new("python3").arg("-m").arg("venv").arg(venv),
        );
        run(
            &format!("pip install -r {}", requirements.display()),
            Command::new(venv.join("bin/python"))
                .args(["-m", "pip", "install", "--disable-pip-version-check", "-r"])
                .arg(requirements),
        );
    })
}

/// The directory of `examples/python-acl`.
pub fn python_acl_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-acl")
}

/// The Python of a ready virtualenv for `examples/python-acl` and the directory of its
/// freshly generated stubs.
pub struct PythonAcl {
    /// The virtualenv's Python.
    pub python: PathBuf,
    /// The stubs generated from `plugin.proto` (the plugin's `--stubs`).
    pub stubs: PathBuf,
}

/// Makes (once per machine, under a file lock shared by parallel test processes) the virtualenv
/// `<target>/python-venv` from `requirements.txt`, remade when the requirements change, and the
/// stubs in `<target>/python-venv/gen-<hash of the .proto>`.
pub fn python_acl() -> &'static PythonAcl {
    static ENV: OnceLock<PythonAcl> = OnceLock::new();
    ENV.get_or_init(|| {
        let python = grpc_python().to_path_buf();
        let venv = python
            .ancestors()
            .nth(2)
            .expect("<venv>/bin/python")
            .to_path_buf();
        // The stubs are made under the same lock, taken again.
        let lock = File::create(venv.with_extension("lock")).expect("create the lock file");
        lock.lock().expect("lock python-venv.lock");

        let proto =
            std::fs::read(python_acl_dir().join("../../proto/tandem/plugin/v1/plugin.proto"))
                .expect("read plugin.proto");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        proto.hash(&mut hasher);
        let stubs = venv.join(format!("gen-{:016x}", hasher.finish()));
        if !stubs.join("tandem/plugin/v1/plugin_pb2_grpc.py").exists() {
            // Generated aside and renamed, so a reader never sees half a directory.
            let tmp = venv.join(format!("gen-tmp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            run(
                "examples/python-acl/generate.sh",
                Command::new("bash")
                    .arg(python_acl_dir().join("generate.sh"))
                    .arg(&tmp)
                    .env("PYTHON", &python),
            );
            std::fs::rename(&tmp, &stubs).expect("move the generated stubs in place");
        }
        drop(lock);
        PythonAcl { python, stubs }
    })
}
