//! `deploy/`: the images, the Kubernetes topologies and the compose file, checked offline.
//!
//! `deploy/validate.sh` lints the Dockerfiles, renders each kustomize topology and validates
//! every object against the Kubernetes API schemas (`--strict`). These tests run it, then read
//! what it rendered and check that the pieces agree with each other and with the broker: the
//! embedded `tandem.yaml` passes `tandem check-config`, each plugin endpoint is where a plugin
//! container listens, the files a plugin's `config:` names are in the volume mounted there,
//! each listener's port is the container's and the Service's, the TLS listener's certificate
//! comes from a Secret mounted as a directory (so that renewals reach the broker) and written
//! by the cert-manager component, probes and grace periods fit the broker's own timeouts, and
//! `storage.path` is on a writable volume that outlives the pod (a StatefulSet's claim, a
//! compose named volume) with one broker writing it. The Dockerfiles' build commands are
//! checked against the workspace CI builds, since no Docker engine runs here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;
use tandem_broker::config::storage::Sync as StorageSync;
use tandem_broker::config::{Config, ListenerKind, TlsConfig};
use tandem_broker::plugins::endpoint::Endpoint;
use tandem_plugin::{DRAIN_TIMEOUT, ListenAddr};
use tandem_tests::{binary, tandem_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// Runs `deploy/validate.sh` once per test process and returns the directory it rendered into.
fn rendered() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("bash")
            .arg(repo().join("deploy/validate.sh"))
            .arg(dir.path())
            .output()
            .expect("run deploy/validate.sh");
        assert!(
            out.status.success(),
            "deploy/validate.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// Every object of a multi-document YAML file.
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The rendered objects of one topology.
struct Rendered {
    docs: Vec<Value>,
}

impl Rendered {
    fn load(name: &str) -> Self {
        let path = rendered().join(format!("{name}.yaml"));
        let text = std::fs::read_to_string(&path).expect("read rendered manifests");
        Rendered {
            docs: yaml_docs(&text),
        }
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name}"))
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    /// The broker's StatefulSet.
    fn broker_set(&self) -> &Value {
        self.get("StatefulSet", "tandem")
    }

    /// The broker's pod template.
    fn broker_pod(&self) -> &Value {
        &self.broker_set()["spec"]["template"]["spec"]
    }

    /// The broker's config from the ConfigMap its StatefulSet mounts (by the hashed name
    /// kustomize wrote into the reference, which proves the reference was rewritten), checked
    /// with the real `tandem check-config --offline` and parsed by the broker's loader.
    fn broker_config(&self) -> (Config, Value) {
        let pod = self.broker_pod();
        let cm_name = volume(pod, "config")["configMap"]["name"]
            .as_str()
            .expect("config volume is a ConfigMap");
        assert!(cm_name.starts_with("tandem-config-"), "{cm_name}");
        let text = self.get("ConfigMap", cm_name)["data"]["tandem.yaml"]
            .as_str()
            .expect("tandem.yaml in the ConfigMap");
        (check_config(text, cm_name), yaml_docs(text).remove(0))
    }

    /// The `data` key of the ConfigMap or Secret that `vol` mounts.
    fn has_key(&self, vol: &Value, key: &str) -> bool {
        let (kind, name) = if let Some(n) = vol["secret"]["secretName"].as_str() {
            ("Secret", n)
        } else if let Some(n) = vol["configMap"]["name"].as_str() {
            ("ConfigMap", n)
        } else {
            return false;
        };
        !self.get(kind, name)["data"][key].is_null()
    }
}

/// Runs `tandem check-config --offline` on the text and parses it with the broker's loader.
fn check_config(text: &str, what: &str) -> Config {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tandem.yaml");
    std::fs::write(&file, text).expect("write tandem.yaml");
    let out = Command::new(tandem_bin())
        .args(["check-config", "--offline"])
        .arg(&file)
        .output()
        .expect("run tandem check-config");
    assert!(
        out.status.success(),
        "{what}: tandem check-config --offline refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Config::from_yaml(text, Path::new(what)).expect("the broker's loader accepts it")
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod[*k].as_array())
        .flatten()
        .collect()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Where a container mounts a volume.
fn mount_path<'a>(c: &'a Value, volume: &str) -> Option<&'a str> {
    c["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
}

/// The container's `--listen` argument, parsed as the SDK does.
fn listen_arg(c: &Value) -> ListenAddr {
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no args", c["name"]))
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--listen")
        .unwrap_or_else(|| panic!("{}: no --listen in {args:?}", c["name"]));
    args[at + 1].parse().expect("the SDK parses --listen")
}

fn seconds(v: &Value) -> Duration {
    Duration::from_secs(v.as_u64().expect("a number of seconds"))
}

/// What the budget allows for the store's flush and close after the drain: one last
/// commit, synced. The broker does not bound it (a failing disk gets three attempts, then
/// the broker stops anyway); this is room for a slow network volume's fsync.
const STORE_CLOSE: Duration = Duration::from_secs(2);

/// The longest a broker pod's shutdown may take: the broker's drain, then the store's
/// flush and close (with `storage.path`), then the events plugins' `broker_post_shutdown`
/// ack, then the sidecars' own drain (native sidecars are stopped after the main container).
fn shutdown_budget(config: &Config, sidecars: bool) -> Duration {
    let lifecycle = config
        .plugins
        .values()
        .map(|p| p.events.lifecycle_timeout)
        .max()
        .unwrap_or_default();
    let sidecar_drain = if sidecars {
        DRAIN_TIMEOUT
    } else {
        Duration::ZERO
    };
    let store = if config.storage.path.is_some() {
        STORE_CLOSE
    } else {
        Duration::ZERO
    };
    config.shutdown_timeout + store + lifecycle + sidecar_drain
}

/// Checks shared by both topologies: the broker's pod, probes, hardening, and every
/// `unix://` plugin endpoint being served by a native sidecar on the shared volume, with
/// the files its `config:` names mounted in that sidecar.
fn check_broker_pod(r: &Rendered, config: &Config, raw: &Value) -> BTreeMap<String, String> {
    let set = r.broker_set();
    assert_eq!(set["spec"]["replicas"], 1, "the broker does not cluster");
    let pod = &set["spec"]["template"]["spec"];
    let broker = container(pod, "tandem");

    // The admin listener serves the probes and /metrics on the port they name.
    let admin_port: u16 = raw["admin"]["bind"]
        .as_str()
        .expect("admin.bind in tandem.yaml")
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("admin.bind has a port");
    let port = broker["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("admin port");
    assert_eq!(port["containerPort"], admin_port);
    assert_eq!(broker["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(broker["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(broker[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let annotations = &set["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], admin_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    check_listener_ports(r, broker, config);
    assert!(
        config
            .listeners
            .values()
            .any(|l| l.kind == ListenerKind::Tls && l.bind.port() == 8883),
        "MQTT over TLS on 8883"
    );
    for (name, listener) in &config.listeners {
        if let Some(tls) = &listener.tls {
            tls_secret(pod, broker, name, tls);
        }
    }

    // Hardening, on every container of the pod.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    for c in containers(pod) {
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", c["name"]);
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        for k in ["requests", "limits"] {
            assert!(c["resources"][k]["memory"].is_string(), "{} {k}", c["name"]);
            assert!(c["resources"][k]["cpu"].is_string(), "{} {k}", c["name"]);
        }
        let image = c["image"].as_str().unwrap();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "{image}"
        );
        // Directory mounts only: the kubelet never updates a subPath mount, so a rotated
        // Secret or ConfigMap would not reach the container.
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            assert!(
                m["subPath"].is_null() && m["subPathExpr"].is_null(),
                "{}: {} is mounted with subPath",
                c["name"],
                m["name"]
            );
        }
    }

    // Sidecars: each serves one unix:// endpoint of the config, on the shared emptyDir.
    let sockets = "plugin-sockets";
    assert!(volume(pod, sockets)["emptyDir"].is_object());
    let broker_dir = mount_path(broker, sockets).expect("the broker mounts the sockets");
    let mut served = BTreeMap::new();
    for side in pod["initContainers"].as_array().into_iter().flatten() {
        let name = side["name"].as_str().unwrap();
        assert_eq!(
            side["restartPolicy"], "Always",
            "{name} is a native sidecar"
        );
        assert!(side["startupProbe"].is_object(), "{name}: startup probe");
        let ListenAddr::Unix(path) = listen_arg(side) else {
            panic!("{name}: a sidecar listens on a unix socket");
        };
        let dir = mount_path(side, sockets).expect("the sidecar mounts the sockets");
        assert_eq!(dir, broker_dir, "{name}: same mount path in both");
        assert!(
            path.starts_with(dir),
            "{name}: {path:?} is on the shared volume"
        );
        let (alias, plugin) = config
            .plugins
            .iter()
            .find(|(_, p)| p.endpoint == Endpoint::Unix(path.clone()))
            .unwrap_or_else(|| panic!("{name}: no plugin endpoint is unix://{path:?}"));
        check_plugin_files(r, pod, side, alias, plugin.config.as_ref());
        served.insert(alias.clone(), side["image"].as_str().unwrap().to_owned());
    }
    for (alias, p) in &config.plugins {
        if let Endpoint::Unix(path) = &p.endpoint {
            assert!(
                served.contains_key(alias),
                "{alias}: no sidecar serves {path:?}"
            );
        }
    }

    // The grace period covers the drain (shutdown_timeout) and the store's flush after it,
    // and what follows: the kubelet's SIGKILL must not cut the flush short.
    let sidecars = !served.is_empty();
    let grace = seconds(&pod["terminationGracePeriodSeconds"]);
    let budget = shutdown_budget(config, sidecars);
    assert!(
        grace > budget,
        "terminationGracePeriodSeconds {grace:?} must exceed the shutdown budget {budget:?}"
    );
    check_storage(r, set, config);
    served
}

/// The store survives the pod and has one writer: `storage.path` is set (sync `always`, as
/// docs/deploy.md promises) and lies on the broker container's writable mount of a
/// volumeClaimTemplate's claim (not an emptyDir, which dies with the pod, nor the read-only
/// root filesystem); fsGroup lets the non-root broker write that volume; the set runs one pod,
/// replaced old-first by RollingUpdate, keeps its claims when deleted or scaled down, and
/// names a headless governing Service that selects the pod.
fn check_storage(r: &Rendered, set: &Value, config: &Config) {
    let spec = &set["spec"];
    assert_eq!(spec["replicas"], 1, "one broker: the store has one writer");
    let path = config
        .storage
        .path
        .as_deref()
        .expect("storage.path is set: sessions and retained messages survive restarts");
    assert!(path.is_absolute(), "storage.path {path:?}");
    assert_eq!(
        config.storage.sync,
        StorageSync::Always,
        "an acknowledged QoS 1/2 message is on disk"
    );

    let pod = &spec["template"]["spec"];
    let broker = container(pod, "tandem");
    // The mount that holds the path: the deepest one containing it.
    let mount = broker["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["mountPath"].as_str().is_some_and(|d| path.starts_with(d)))
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
        .unwrap_or_else(|| {
            panic!("storage.path {path:?} is on no volume (the root filesystem is read-only)")
        });
    assert_ne!(
        mount["readOnly"], true,
        "storage.path {path:?}: the broker writes there"
    );
    let name = mount["name"].as_str().unwrap();
    let claim = spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!("storage.path {path:?} is on volume {name}, which no volumeClaimTemplate makes")
        });
    // The controller would replace a pod volume of the claim's name with the claim: one
    // declaration, so that what is read here is what runs.
    assert!(
        pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|v| v["name"] != name),
        "volume {name} is both a claim and a pod volume"
    );
    let modes = claim["spec"]["accessModes"]
        .as_array()
        .expect("the claim's access modes");
    assert!(
        !modes.is_empty()
            && modes
                .iter()
                .all(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod"),
        "the store's claim is mounted by one node at a time: {modes:?}"
    );
    assert!(
        claim["spec"]["resources"]["requests"]["storage"].is_string(),
        "the claim asks for a size"
    );
    let retention = &spec["persistentVolumeClaimRetentionPolicy"];
    for when in ["whenDeleted", "whenScaled"] {
        assert_ne!(
            retention[when], "Delete",
            "{when}: the store outlives the set"
        );
    }
    // The volume's root is group-owned by fsGroup and group-writable once mounted: without
    // it, uid 10001 cannot create tandem.redb on most provisioners' volumes.
    assert!(
        pod["securityContext"]["fsGroup"].as_u64().is_some(),
        "fsGroup makes the store's volume writable by the non-root broker"
    );
    // No surge: the controller stops tandem-0 before it makes the new tandem-0.
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        spec["updateStrategy"]["rollingUpdate"]["partition"]
            .as_u64()
            .unwrap_or(0),
        0,
        "a partition would hold the broker back on the old revision"
    );

    let svc = r.get(
        "Service",
        spec["serviceName"]
            .as_str()
            .expect("the set's governing Service"),
    );
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    let labels = &spec["template"]["metadata"]["labels"];
    let selector = svc["spec"]["selector"].as_object().expect("a selector");
    assert!(
        !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v),
        "the governing Service selects the broker's pod"
    );
}

/// Each listener's port is a port of the broker container and, by that port's name, of the
/// MQTT Service `tandem` (same number inside and out); and the Service serves nothing else.
fn check_listener_ports(r: &Rendered, broker: &Value, config: &Config) {
    let container_ports = broker["ports"].as_array().expect("the broker's ports");
    let service_ports = r.get("Service", "tandem")["spec"]["ports"]
        .as_array()
        .expect("the MQTT Service's ports");
    let mut served = BTreeSet::new();
    for (name, listener) in &config.listeners {
        let port = listener.bind.port();
        let cport = container_ports
            .iter()
            .find(|p| p["containerPort"] == port)
            .unwrap_or_else(|| panic!("listener {name}: the broker container has no port {port}"));
        let cname = cport["name"].as_str().expect("container ports are named");
        let sport = service_ports
            .iter()
            .find(|p| p["targetPort"] == cname)
            .unwrap_or_else(|| {
                panic!("listener {name}: the Service tandem has no port for {cname}")
            });
        assert_eq!(sport["port"], port, "listener {name}: the Service's port");
        assert_eq!(sport["protocol"], "TCP", "listener {name}");
        served.insert(cname);
    }
    for sport in service_ports {
        let target = sport["targetPort"].as_str().unwrap_or_default();
        assert!(
            served.contains(target),
            "the Service tandem's port {} is no listener of tandem.yaml",
            sport["name"]
        );
    }
}

/// A TLS listener's files come from one Secret, mounted in the broker container as a whole
/// directory at the files' directory (no subPath, no `items`: the kubelet's updates reach the
/// broker, which watches that directory), under the keys of a `kubernetes.io/tls` Secret as
/// cert-manager writes it. Returns the Secret's name.
fn tls_secret(pod: &Value, broker: &Value, listener: &str, tls: &TlsConfig) -> String {
    let files = [
        ("cert", Some(&tls.cert), "tls.crt"),
        ("key", Some(&tls.key), "tls.key"),
        ("client_ca", tls.client_ca.as_ref(), "ca.crt"),
    ];
    let mut secrets = BTreeSet::new();
    for (field, file, key) in files {
        let Some(file) = file else { continue };
        let what = format!("listener {listener}: tls.{field} {}", file.display());
        assert_eq!(
            file.file_name().and_then(|n| n.to_str()),
            Some(key),
            "{what}: the Secret's key is {key}"
        );
        let dir = file
            .parent()
            .and_then(Path::to_str)
            .expect("an absolute path");
        let mount = broker["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{what}: nothing is mounted at {dir}"));
        assert!(
            mount["subPath"].is_null(),
            "{what}: a subPath mount never updates"
        );
        let vol = volume(pod, mount["name"].as_str().unwrap());
        let secret = vol["secret"]["secretName"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: comes from a Secret, not {vol}"));
        assert!(
            vol["secret"]["items"].is_null() && vol["secret"]["optional"] != true,
            "{what}: every key of the Secret, which must exist"
        );
        secrets.insert(secret.to_owned());
    }
    assert_eq!(
        secrets.len(),
        1,
        "listener {listener}: one Secret: {secrets:?}"
    );
    secrets.pop_first().unwrap()
}

/// The keys of a cert-manager object's field are among those its v1 CRD defines (no schema
/// validates them: kubernetes-validate knows only Kubernetes' own kinds).
fn known_fields(v: &Value, allowed: &[&str], what: &str) {
    for key in v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {v}"))
        .keys()
    {
        assert!(
            allowed.contains(&key.as_str()),
            "{what}.{key} is not a field of cert-manager.io/v1"
        );
    }
}

/// The value following `flag` in a container's args.
fn arg_value(c: &Value, flag: &str) -> Option<String> {
    let args: Vec<&str> = c["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let i = args.iter().position(|a| *a == flag)?;
    args.get(i + 1).map(|v| (*v).to_owned())
}

/// The Secret mounted (with `file`'s name as a key) on `file`'s directory in container `c`.
fn mounted_secret(r: &Rendered, pod: &Value, c: &Value, file: &str) -> String {
    let (dir, key) = file.rsplit_once('/').expect("an absolute path");
    let mount = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir} for {file}"));
    let vol = volume(pod, mount["name"].as_str().unwrap());
    assert!(r.has_key(vol, key), "{file} is not in {vol}");
    vol["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: a token comes from a Secret, not {vol}"))
        .to_owned()
}

/// Every `*_file` in a plugin's `config:` is a key of the ConfigMap or Secret that the plugin's
/// container mounts on that file's directory.
fn check_plugin_files(r: &Rendered, pod: &Value, c: &Value, alias: &str, config: Option<&Value>) {
    let files: Vec<&str> = config
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.ends_with("_file"))
        .filter_map(|(_, v)| v.as_str())
        .collect();
    assert!(!files.is_empty(), "{alias}: the example plugins read files");
    for file in files {
        let (dir, key) = file.rsplit_once('/').expect("an absolute path");
        let mount = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{alias}: nothing mounted at {dir} for {file}"));
        let vol = volume(pod, mount["name"].as_str().unwrap());
        assert!(r.has_key(vol, key), "{alias}: {file} is not in {vol}");
    }
}

#[test]
fn sidecar_topology_agrees_with_its_config() {
    let r = Rendered::load("sidecar");
    let (config, raw) = r.broker_config();
    let served = check_broker_pod(&r, &config, &raw);
    assert_eq!(config.auth.as_ref().unwrap().plugins, ["auth"]);
    assert_eq!(config.topic_check.as_ref().unwrap().plugins, ["acl"]);
    assert!(
        served["auth"].starts_with("tandem-auth-file:"),
        "{served:?}"
    );
    assert!(served["acl"].starts_with("tandem-topic-acl:"), "{served:?}");
    assert!(r.all("HorizontalPodAutoscaler").is_empty());
}

#[test]
fn scaled_auth_is_reached_through_its_headless_service() {
    let r = Rendered::load("scaled-auth");
    let (config, raw) = r.broker_config();
    let served = check_broker_pod(&r, &config, &raw);
    assert!(served["acl"].starts_with("tandem-topic-acl:"));
    assert!(!served.contains_key("auth"), "auth is not a sidecar here");

    let alias = &config.auth.as_ref().unwrap().plugins[0];
    let Endpoint::Dns { host, port } = &config.plugins[alias].endpoint else {
        panic!("{alias}: a scaled plugin is reached through dns:///");
    };
    // A relative name, or <svc>.<namespace>.svc.cluster.local.
    let svc_name = host.split('.').next().unwrap();
    let svc = r.get("Service", svc_name);
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "headless: one address per pod"
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], *port);
    let selector = svc["spec"]["selector"].as_object().unwrap();

    let deploy = r
        .all("Deployment")
        .into_iter()
        .find(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            selector.iter().all(|(k, v)| &labels[k] == v)
        })
        .expect("a Deployment behind the Service");
    let name = deploy["metadata"]["name"].as_str().unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    let plugin = &pod["containers"][0];
    assert!(
        plugin["image"]
            .as_str()
            .unwrap()
            .starts_with("tandem-auth-file:")
    );
    match listen_arg(plugin) {
        ListenAddr::Tcp(addr) => {
            assert!(
                addr.ip().is_unspecified(),
                "{addr}: reachable from the broker"
            );
            assert_eq!(addr.port(), *port);
        }
        other => panic!("{other}: a scaled plugin listens on TCP"),
    }
    assert_eq!(plugin["ports"][0]["containerPort"], *port);
    // On the pod network the plugin requires the broker's token: both sides read it from the
    // same Secret (the broker's token_file, the plugin's --token-file).
    let broker_file = config.plugins[alias]
        .token_file
        .as_ref()
        .expect("the scaled plugin is called with a token")
        .display()
        .to_string();
    let plugin_file = arg_value(plugin, "--token-file").expect("the plugin requires a token");
    let broker_pod = r.broker_pod();
    let broker_c = &broker_pod["containers"][0];
    assert_eq!(
        mounted_secret(&r, broker_pod, broker_c, &broker_file),
        mounted_secret(&r, pod, plugin, &plugin_file),
        "one token on both sides"
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(plugin[probe]["grpc"]["port"], *port, "{probe}: gRPC health");
    }
    check_plugin_files(
        &r,
        pod,
        plugin,
        alias,
        config.plugins[alias].config.as_ref(),
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(plugin["securityContext"]["readOnlyRootFilesystem"], true);
    let grace = seconds(&pod["terminationGracePeriodSeconds"]);
    assert!(
        grace > DRAIN_TIMEOUT,
        "the SDK drains for {DRAIN_TIMEOUT:?}"
    );

    let hpa = r.get("HorizontalPodAutoscaler", name);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name);
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(
        plugin["resources"]["requests"]["cpu"].is_string(),
        "HPA needs a CPU request"
    );
    let pdb = r.get("PodDisruptionBudget", name);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn servicemonitor_scrapes_the_admin_service() {
    let r = Rendered::load("servicemonitor");
    let sm = r.get("ServiceMonitor", "tandem");
    let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let svc = r
        .all("Service")
        .into_iter()
        .find(|s| {
            selector
                .iter()
                .all(|(k, v)| &s["metadata"]["labels"][k] == v)
        })
        .expect("the ServiceMonitor selects a Service");
    assert_eq!(svc["metadata"]["name"], "tandem-admin");
    let endpoint = &sm["spec"]["endpoints"][0];
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"]),
        "the endpoint names a port of the Service"
    );
    assert_eq!(endpoint["path"], "/metrics");
}

#[test]
fn cert_manager_writes_the_secret_the_tls_listener_reads() {
    let r = Rendered::load("cert-manager");
    let (config, raw) = r.broker_config();
    check_broker_pod(&r, &config, &raw);
    let pod = r.broker_pod();
    let broker = container(pod, "tandem");
    let (name, listener) = config
        .listeners
        .iter()
        .find(|(_, l)| l.kind == ListenerKind::Tls)
        .expect("a TLS listener");
    let secret = tls_secret(pod, broker, name, listener.tls.as_ref().unwrap());

    let certs = r.all("Certificate");
    let issuers = r.all("Issuer");
    for c in &certs {
        assert_eq!(c["apiVersion"], "cert-manager.io/v1");
        let spec = &c["spec"];
        known_fields(
            spec,
            &[
                "secretName",
                "issuerRef",
                "isCA",
                "commonName",
                "dnsNames",
                "ipAddresses",
                "uris",
                "emailAddresses",
                "subject",
                "duration",
                "renewBefore",
                "usages",
                "privateKey",
                "secretTemplate",
                "revisionHistoryLimit",
            ],
            "Certificate.spec",
        );
        known_fields(&spec["issuerRef"], &["name", "kind", "group"], "issuerRef");
        known_fields(
            &spec["privateKey"],
            &["algorithm", "size", "encoding", "rotationPolicy"],
            "privateKey",
        );
        let duration = humantime::parse_duration(spec["duration"].as_str().unwrap()).unwrap();
        let renew = humantime::parse_duration(spec["renewBefore"].as_str().unwrap()).unwrap();
        assert!(
            renew < duration,
            "{}: renewed before it expires",
            c["metadata"]["name"]
        );
        // Every Certificate's issuer is in the component (none is assumed to exist).
        let issuer = &spec["issuerRef"];
        assert_eq!(issuer["kind"], "Issuer");
        r.get("Issuer", issuer["name"].as_str().unwrap());
    }
    for i in &issuers {
        assert_eq!(i["apiVersion"], "cert-manager.io/v1");
        known_fields(&i["spec"], &["selfSigned", "ca"], "Issuer.spec");
        // A CA Issuer signs with a CA certificate of the component.
        if let Some(ca) = i["spec"]["ca"]["secretName"].as_str() {
            let ca_cert = certs
                .iter()
                .find(|c| c["spec"]["secretName"] == ca)
                .unwrap_or_else(|| panic!("no Certificate writes the CA Secret {ca}"));
            assert_eq!(ca_cert["spec"]["isCA"], true);
        }
    }

    let cert = certs
        .iter()
        .find(|c| c["spec"]["secretName"] == secret.as_str())
        .unwrap_or_else(|| panic!("no Certificate writes the Secret {secret} the broker mounts"));
    let spec = &cert["spec"];
    assert_ne!(spec["isCA"], true);
    let usages = spec["usages"].as_array().expect("usages");
    assert!(usages.iter().any(|u| u == "server auth"), "{usages:?}");
    // The names clients dial: the Service, short and qualified.
    let names: Vec<&str> = spec["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let svc = r.get("Service", "tandem")["metadata"]["name"]
        .as_str()
        .unwrap();
    assert!(names.contains(&svc), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{svc}.")) && n.ends_with(".svc")),
        "{names:?}"
    );
    // Its issuer signs with a CA, so the Secret's ca.crt is what clients pass as --cafile.
    let issuer = r.get("Issuer", spec["issuerRef"]["name"].as_str().unwrap());
    assert!(issuer["spec"]["ca"].is_object(), "{issuer}");
}

fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("deploy/compose.yaml")).unwrap();
    yaml_docs(&text).remove(0)
}

/// A compose project as `docker compose config --format json` wrote it (validate.sh): every
/// volume in its long form.
fn rendered_compose(name: &str) -> Value {
    let text = std::fs::read_to_string(rendered().join(name)).expect("rendered compose file");
    serde_json::from_str(&text).expect("compose's JSON")
}

/// The store of the compose broker survives `down`/`up` and has one writer: `storage.path`
/// is on a named volume declared by the project (not a bind mount, an anonymous volume, or
/// the read-only container filesystem), mounted writable, by the broker only, which runs
/// once. A new named volume starts as a copy of the image's directory, so the broker image
/// must own that directory.
fn check_compose_storage(project: &Value, config: &Config, what: &str) {
    let path = config
        .storage
        .path
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: storage.path is set"));
    assert_eq!(config.storage.sync, StorageSync::Always, "{what}");
    let services = project["services"].as_object().expect("services");
    let broker = &services["broker"];
    let mount = broker["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["target"].as_str().is_some_and(|t| path.starts_with(t)))
        .max_by_key(|m| m["target"].as_str().unwrap().len())
        .unwrap_or_else(|| panic!("{what}: storage.path {path:?} is on no volume of the broker"));
    assert_eq!(
        mount["type"], "volume",
        "{what}: storage.path {path:?} is on a named volume: {mount}"
    );
    assert_ne!(mount["read_only"], true, "{what}: the broker writes there");
    let volume = mount["source"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: an anonymous volume is not kept: {mount}"));
    assert!(
        project["volumes"][volume].is_object(),
        "{what}: the volume {volume} is declared by the project"
    );
    for (name, s) in services.iter().filter(|(name, _)| *name != "broker") {
        assert!(
            s["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|m| m["source"] != volume),
            "{what}: only the broker mounts its store, not {name}"
        );
    }
    assert_eq!(
        broker["deploy"]["replicas"].as_u64().unwrap_or(1),
        1,
        "{what}: one broker writes the store"
    );
    let build = &broker["build"];
    let dockerfile = Path::new(
        build["context"]
            .as_str()
            .expect("the broker's image is built"),
    )
    .join(build["dockerfile"].as_str().expect("from a Dockerfile"));
    assert!(
        image_chowns(&dockerfile, path),
        "{what}: {} gives {path:?} to the uid it runs as, or the new volume is root's",
        dockerfile.display()
    );
}

/// Whether the runtime stage of a Dockerfile `chown`s `dir` to the uid of its `USER`.
fn image_chowns(dockerfile: &Path, dir: &Path) -> bool {
    let ins = instructions(dockerfile);
    let runtime = &ins[ins.iter().rposition(|(op, _)| op == "FROM").expect("FROM")..];
    let user = runtime
        .iter()
        .rfind(|(op, _)| op == "USER")
        .and_then(|(_, u)| u.split(':').next())
        .expect("a USER");
    runtime
        .iter()
        .filter(|(op, _)| op == "RUN")
        .flat_map(|(_, r)| r.split("&&"))
        .any(|command| {
            let words: Vec<&str> = command.split_whitespace().collect();
            matches!(&words[..], ["chown", owner, paths @ ..]
                if owner.split(':').next() == Some(user)
                    && paths.iter().any(|p| Path::new(p) == dir))
        })
}

#[test]
fn compose_topology_agrees_with_its_config() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let text = std::fs::read_to_string(repo().join("deploy/compose/tandem.yaml")).unwrap();
    let config = check_config(&text, "deploy/compose/tandem.yaml");
    check_compose_storage(&rendered_compose("compose.json"), &config, "compose.yaml");
    let broker = &services["broker"];
    assert!(
        broker["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "./compose/tandem.yaml:/etc/tandem/tandem.yaml:ro")
    );
    let stop = humantime::parse_duration(broker["stop_grace_period"].as_str().unwrap()).unwrap();
    assert!(stop > shutdown_budget(&config, true));

    for (alias, plugin) in &config.plugins {
        match &plugin.endpoint {
            Endpoint::Unix(path) => {
                // Some service listens on that socket, on the volume the broker shares.
                let (name, _) = services
                    .iter()
                    .find(|(_, s)| {
                        s["environment"]["TANDEM_PLUGIN_LISTEN"]
                            .as_str()
                            .and_then(|l| l.parse::<ListenAddr>().ok())
                            == Some(ListenAddr::Unix(path.clone()))
                    })
                    .unwrap_or_else(|| panic!("{alias}: nothing listens on {path:?}"));
                for s in [name.as_str(), "broker"] {
                    assert!(
                        services[s]["volumes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|v| v == "sockets:/run/tandem"),
                        "{s} mounts the sockets volume"
                    );
                }
                assert!(path.starts_with("/run/tandem"));
            }
            Endpoint::Dns { host, port } => {
                let s = &services[host.as_str()];
                let listen: ListenAddr = s["environment"]["TANDEM_PLUGIN_LISTEN"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(matches!(listen, ListenAddr::Tcp(a) if a.port() == *port));
                assert!(s["deploy"]["replicas"].as_u64().unwrap() >= 2, "{alias}");
            }
            other => panic!("{alias}: unexpected endpoint {other}"),
        }
        if let Some(files) = plugin.config.as_ref().and_then(Value::as_object) {
            for file in files.iter().filter(|(k, _)| k.ends_with("_file")) {
                let file = file.1.as_str().unwrap();
                let mounted = services.values().any(|s| {
                    s["volumes"].as_array().into_iter().flatten().any(|v| {
                        v.as_str()
                            .is_some_and(|v| v.split(':').nth(1) == Some(file))
                    })
                });
                assert!(mounted, "{alias}: no service mounts {file}");
            }
        }
    }
}

/// `compose.tls.yaml` over `compose.yaml`, as compose merges them (rendered by validate.sh):
/// the broker gets `compose/tandem-tls.yaml`, which is `compose/tandem.yaml` plus a TLS
/// listener, each listener's port is published, the certificates' directory is mounted
/// whole where the listener reads them, and the store stays on its named volume.
#[test]
fn compose_tls_override_serves_8883_from_the_mounted_certificates() {
    let merged = rendered_compose("compose-tls.json");
    let broker = &merged["services"]["broker"];
    let mounts = broker["volumes"].as_array().expect("the broker's volumes");
    let mount = |target: &str| {
        mounts
            .iter()
            .find(|m| m["target"] == target)
            .unwrap_or_else(|| panic!("nothing is mounted at {target}: {mounts:?}"))
    };
    let source = |m: &Value| PathBuf::from(m["source"].as_str().unwrap());
    let compose_dir = repo().join("deploy/compose");
    assert_eq!(
        source(mount("/etc/tandem/tandem.yaml")),
        compose_dir.join("tandem-tls.yaml")
    );

    let text = std::fs::read_to_string(compose_dir.join("tandem-tls.yaml")).unwrap();
    let config = check_config(&text, "deploy/compose/tandem-tls.yaml");
    check_compose_storage(&merged, &config, "compose.yaml with compose.tls.yaml");
    let mut with_tls = yaml_docs(&text).remove(0);
    let plain = std::fs::read_to_string(compose_dir.join("tandem.yaml")).unwrap();
    let mut plain = yaml_docs(&plain).remove(0);
    let tls_listeners = with_tls
        .as_object_mut()
        .unwrap()
        .remove("listeners")
        .unwrap();
    let plain_listeners = plain.as_object_mut().unwrap().remove("listeners").unwrap();
    assert_eq!(
        with_tls, plain,
        "tandem-tls.yaml is tandem.yaml but for its listeners"
    );
    for (name, l) in plain_listeners.as_object().unwrap() {
        assert_eq!(&tls_listeners[name], l, "listener {name}");
    }

    for (name, listener) in &config.listeners {
        let port = listener.bind.port();
        assert!(
            broker["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["target"] == port
                    && p["published"].as_str().and_then(|s| s.parse().ok()) == Some(port)),
            "listener {name}: port {port} is not published"
        );
        let Some(tls) = &listener.tls else { continue };
        for file in [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
            .into_iter()
            .flatten()
        {
            let dir = file.parent().and_then(Path::to_str).unwrap();
            let m = mount(dir);
            assert_eq!(m["type"], "bind", "{}", file.display());
            assert_eq!(
                source(m),
                compose_dir.join("tls"),
                "make-certs.sh writes there"
            );
            let key = file.file_name().and_then(|n| n.to_str()).unwrap();
            assert!(
                ["tls.crt", "tls.key", "ca.crt"].contains(&key),
                "{}: make-certs.sh writes no {key}",
                file.display()
            );
        }
    }
    assert!(
        config
            .listeners
            .values()
            .any(|l| l.kind == ListenerKind::Tls && l.bind.port() == 8883)
    );
}

/// A Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (current.is_empty() && trimmed.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(trimmed);
                let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

fn dockerfiles() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("Dockerfile"))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    files
}

#[test]
fn dockerfiles_are_pinned_and_run_as_non_root() {
    for file in dockerfiles() {
        let ins = instructions(&file);
        let name = file.display();
        for (_, from) in ins.iter().filter(|(op, _)| op == "FROM") {
            let image = from.split_whitespace().next().unwrap();
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(
                tag.chars().next().is_some_and(|c| c.is_ascii_digit()) || tag.contains('.'),
                "{name}: FROM {image} is not pinned to a version"
            );
        }
        let last_from = ins.iter().rposition(|(op, _)| op == "FROM").unwrap();
        let runtime = &ins[last_from..];
        let user = runtime
            .iter()
            .rfind(|(op, _)| op == "USER")
            .unwrap_or_else(|| panic!("{name}: the runtime stage sets no USER"));
        let uid: u32 = user
            .1
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: USER {} is not numeric (runAsNonRoot needs a uid)",
                    user.1
                )
            });
        assert_ne!(uid, 0, "{name}: runs as root");
        assert!(runtime.iter().any(|(op, _)| op == "HEALTHCHECK"), "{name}");
        assert!(runtime.iter().any(|(op, _)| op == "ENTRYPOINT"), "{name}");
        // Only the build stage builds: no compiler work at run time.
        assert!(
            !runtime
                .iter()
                .any(|(op, r)| op == "RUN" && r.contains("cargo")),
            "{name}"
        );
    }
}

/// Each `cargo build` in a Dockerfile builds, `--locked` and in release, a package and binary
/// that the workspace has and that CI builds (the same command in the dev profile, via
/// `cargo test --workspace`); the one for the Python example runs the same pip install and
/// `generate.sh` as its test. The parameterised plugin image is checked for every
/// PACKAGE/BIN pair that compose.yaml builds.
#[test]
fn dockerfile_builds_are_what_ci_builds() {
    let metadata = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--locked",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(metadata.status.success(), "{metadata:?}");
    let metadata: Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let has_bin = |package: &str, bin: &str| {
        metadata["packages"].as_array().unwrap().iter().any(|p| {
            p["name"] == package
                && p["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["name"] == bin && t["kind"][0] == "bin")
        })
    };

    let mut pairs = Vec::new();
    for service in compose()["services"].as_object().unwrap().values() {
        let build = &service["build"];
        if build["dockerfile"] == "deploy/Dockerfile.plugin" {
            let args = &build["args"];
            pairs.push((
                args["PACKAGE"].as_str().unwrap().to_owned(),
                args["BIN"].as_str().unwrap().to_owned(),
            ));
        }
    }
    pairs.sort();
    let expected = [
        "tandem-auth-file",
        "tandem-auth-jwt",
        "tandem-event-logger",
        "tandem-policy",
        "tandem-topic-acl",
    ];
    assert_eq!(
        pairs.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        expected,
        "compose.yaml builds an image of every example plugin"
    );

    for file in dockerfiles() {
        let runs: Vec<String> = instructions(&file)
            .into_iter()
            .filter(|(op, _)| op == "RUN")
            .flat_map(|(_, r)| {
                r.split("&&")
                    .map(|c| c.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        let cargo: Vec<&String> = runs.iter().filter(|c| c.starts_with("cargo ")).collect();
        let name = file.file_name().unwrap().to_str().unwrap();
        if name == "Dockerfile.python-acl" {
            assert!(cargo.is_empty());
            assert!(runs.iter().any(|c| c.ends_with(
                "-m pip install --no-cache-dir --disable-pip-version-check -r examples/python-acl/requirements.txt"
            )));
            assert!(
                runs.iter()
                    .any(|c| c
                        .starts_with("PYTHON=/venv/bin/python examples/python-acl/generate.sh ")),
                "{runs:?}"
            );
            for f in ["requirements.txt", "generate.sh", "plugin.py"] {
                assert!(
                    repo().join("examples/python-acl").join(f).exists(),
                    "examples/python-acl/{f} is missing"
                );
            }
            continue;
        }
        assert_eq!(cargo.len(), 1, "{name}: one cargo build: {runs:?}");
        let words: Vec<&str> = cargo[0]
            .split_whitespace()
            .map(|w| w.trim_matches('"'))
            .collect();
        let (package, bin) = match &words[..] {
            [
                "cargo",
                "build",
                "--release",
                "--locked",
                "-p",
                p,
                "--bin",
                b,
            ] => (*p, *b),
            _ => panic!("{name}: unexpected build command {}", cargo[0]),
        };
        let targets = if package == "${PACKAGE}" {
            assert_eq!(bin, "${BIN}");
            pairs.clone()
        } else {
            vec![(package.to_owned(), bin.to_owned())]
        };
        for (package, bin) in targets {
            assert!(
                has_bin(&package, &bin),
                "{name}: no binary {bin} in package {package}"
            );
            assert!(
                binary(&bin).exists(),
                "{name}: CI's build (cargo test --workspace) produced no {bin}"
            );
        }
    }
}

#[test]
fn image_default_config_is_valid() {
    let text = std::fs::read_to_string(repo().join("deploy/image-tandem.yaml")).unwrap();
    let config = check_config(&text, "deploy/image-tandem.yaml");
    assert!(config.listeners["default"].bind.ip().is_unspecified());
    assert!(config.plugins.is_empty());
}
