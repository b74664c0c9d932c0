//! Packaging: the systemd units, the `validate` subcommand they run before start, the
//! Kubernetes manifests and the Debian packages, checked against the real binaries.
//!
//! - `systemd_units_verify`: `systemd-analyze verify` on each unit, pointed at the built
//!   binaries and the example configs.
//! - `validate_exit_codes`: `<bin> validate --config` exits 0 on the example configs and
//!   64 with a reason on bad ones.
//! - `k8s_manifests_parse`: every document in `packaging/k8s/*.yaml` parses, the agent
//!   DaemonSet sees the host read-only, the StatefulSet has its volume, and the embedded
//!   configs pass `validate`.
//! - `deb_packages_build`: `packaging/debian/build-deb.sh` builds both packages with the
//!   unit, binary and conffile in them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use augur_tests::{bin, bin_dir, have, repo_root, skip};
use serde::Deserialize;
use serde_norway::Value;

/// Exit code of both daemons for a bad config (EX_USAGE).
const EXIT_CONFIG: i32 = 64;

/// The packaged units: (unit file, binary, example config).
const UNITS: [(&str, &str, &str); 2] = [
    ("augur-agent.service", "augur-agent", "agent.toml"),
    ("augur-aggregator.service", "augur-aggregator", "aggregator.toml"),
];

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// stdout and stderr of a finished command, for assertion messages.
fn both(out: &Output) -> String {
    format!("exit {:?}\n--- stdout\n{}--- stderr\n{}", out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn example_config(name: &str) -> PathBuf {
    repo_root().join("packaging/config").join(name)
}

/// Runs `<bin> validate --config <config>`.
fn validate(binary: &str, config: &Path) -> Output {
    run(Command::new(bin(binary)).arg("validate").arg("--config").arg(config))
}

// ---------------------------------------------------------------------------------------
// systemd

/// A unit rewritten to run the built binary on the repo's example config, in `dir`
/// (symlinks, so the paths in the unit have no spaces whatever the checkout's path).
fn localized_unit(dir: &Path, unit: &str, binary: &str, config: &str) -> PathBuf {
    let original = std::fs::read_to_string(repo_root().join("systemd").join(unit)).expect("unit file");
    let local_bin = dir.join(binary);
    let local_cfg = dir.join(config);
    std::os::unix::fs::symlink(bin(binary), &local_bin).expect("symlink binary");
    std::os::unix::fs::symlink(example_config(config), &local_cfg).expect("symlink config");
    let rewritten = original
        .replace(&format!("/usr/bin/{binary}"), &local_bin.display().to_string())
        .replace(&format!("/etc/augur/{config}"), &local_cfg.display().to_string());
    assert!(!rewritten.contains("/usr/bin/augur"), "{unit}: a binary path was not rewritten");
    assert!(!rewritten.contains("/etc/augur/"), "{unit}: a config path was not rewritten");
    let path = dir.join(unit);
    std::fs::write(&path, rewritten).expect("write unit");
    path
}

/// Lines of `systemd-analyze verify` output about `unit` (it may also complain about
/// unrelated units installed on this machine).
fn verify_complaints(unit_path: &Path) -> (Output, Vec<String>) {
    let name = unit_path.file_name().expect("file name").to_string_lossy().into_owned();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(unit_path));
    let lines = text(&out.stdout)
        .lines()
        .chain(text(&out.stderr).lines())
        .filter(|l| l.contains(&name))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    (out, lines)
}

#[test]
fn systemd_units_verify() {
    if !have("systemd-analyze")
        && skip("systemd_units_verify", "systemd-analyze not installed (Debian package systemd)")
    {
        return;
    }
    for (unit, binary, config) in UNITS {
        let original = std::fs::read_to_string(repo_root().join("systemd").join(unit)).expect("unit file");
        // Style item 11: the config is validated before every start.
        let pre = format!("ExecStartPre=/usr/bin/{binary} validate --config /etc/augur/{config}");
        assert!(original.lines().any(|l| l == pre), "{unit} lacks `{pre}`");
        for needed in ["Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=yes"] {
            assert!(original.lines().any(|l| l == needed), "{unit} lacks `{needed}`");
        }
        let state = format!("StateDirectory={binary}");
        assert!(original.lines().any(|l| l == state), "{unit} lacks `{state}`");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = localized_unit(dir.path(), unit, binary, config);
        let (out, complaints) = verify_complaints(&path);
        assert!(out.status.success(), "systemd-analyze verify {unit} failed:\n{}", both(&out));
        assert!(complaints.is_empty(), "systemd-analyze verify complains about {unit}:\n{}", complaints.join("\n"));

        // The unit's own pre-start check, as systemd would run it, accepts the example.
        let local = std::fs::read_to_string(&path).expect("read unit");
        let cmdline = local
            .lines()
            .find_map(|l| l.strip_prefix("ExecStartPre="))
            .expect("ExecStartPre line")
            .split_whitespace()
            .collect::<Vec<_>>();
        let out = run(Command::new(cmdline[0]).args(&cmdline[1..]));
        assert!(out.status.success(), "{unit}'s ExecStartPre fails on the example config:\n{}", both(&out));
    }

    // The filter above really sees problems: a broken copy is reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = localized_unit(dir.path(), UNITS[0].0, UNITS[0].1, UNITS[0].2);
    let broken = std::fs::read_to_string(&path).expect("read unit").replace("CPUQuota=", "CPUQuotta=");
    std::fs::write(&path, broken).expect("write unit");
    let (out, complaints) = verify_complaints(&path);
    assert!(
        complaints.iter().any(|l| l.contains("CPUQuotta")),
        "systemd-analyze verify did not report an unknown key; output:\n{}",
        both(&out)
    );
}

// ---------------------------------------------------------------------------------------
// validate

/// Writes `body` as a config file and expects `validate` to refuse it, naming `reason`.
fn assert_refused(binary: &str, body: &str, reason: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, body).expect("write config");
    let out = validate(binary, &path);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{binary} validate on {body:?}:\n{}", both(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(reason), "{binary} validate on {body:?}: stderr does not mention {reason:?}:\n{stderr}");
}

#[test]
fn validate_exit_codes() {
    for (_, binary, config) in UNITS {
        let out = validate(binary, &example_config(config));
        assert!(out.status.success(), "{binary} validate --config packaging/config/{config}:\n{}", both(&out));
    }

    assert_refused("augur-agent", "interval = \"1ms\"\n", "interval");
    assert_refused("augur-agent", "intervall = \"1s\"\n", "intervall");
    assert_refused("augur-agent", "[aggregator]\nurl = \"aggregator:7461\"\n", "aggregator.url");

    assert_refused("augur-aggregator", "[ingest]\nmax_message_bytes = \"10\"\n", "max_message_bytes");
    assert_refused("augur-aggregator", "listen = \"nowhere\"\n", "listen");
    assert_refused("augur-aggregator", "[storage]\nraw_retention = \"soon\"\n", "raw_retention");
}

// ---------------------------------------------------------------------------------------
// Kubernetes

/// One parsed document of a manifest file.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        str_at(&self.value, "kind").unwrap_or("")
    }
    fn name(&self) -> &str {
        str_at(&self.value, "metadata.name").unwrap_or("")
    }
    fn what(&self) -> String {
        format!("{} {}/{}", self.file, self.kind(), self.name())
    }
}

/// The value at a dotted path (`spec.template.spec`), if every step exists.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn seq_at<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or(&[])
}

fn load_manifests() -> Vec<Doc> {
    let dir = repo_root().join("packaging/k8s");
    let mut files = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect::<Vec<_>>();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for path in files {
        let file = path.file_name().expect("file name").to_string_lossy().into_owned();
        let body = std::fs::read_to_string(&path).expect("read manifest");
        for de in serde_norway::Deserializer::from_str(&body) {
            let value = Value::deserialize(de).unwrap_or_else(|e| panic!("{file}: invalid YAML: {e}"));
            if value.is_null() {
                continue; // an empty document (comments only)
            }
            docs.push(Doc { file: file.clone(), value });
        }
    }
    docs
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in packaging/k8s"))
}

/// Writes the ConfigMap's `key` to a file and runs `<binary> validate` on it.
fn assert_embedded_config_valid(docs: &[Doc], configmap: &str, key: &str, binary: &str) -> String {
    let cm = find(docs, "ConfigMap", configmap);
    let body = at(&cm.value, "data").and_then(|d| d.get(key)).and_then(Value::as_str);
    let body = body.unwrap_or_else(|| panic!("{} has no data.{key}", cm.what())).to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(key);
    std::fs::write(&path, &body).expect("write config");
    let out = validate(binary, &path);
    assert!(out.status.success(), "{}'s {key} does not validate:\n{}", cm.what(), both(&out));
    body
}

/// The string at a dotted path of a TOML table (`host.proc_root`).
fn toml_str<'a>(table: &'a toml::Table, path: &str) -> Option<&'a str> {
    let (sections, key) = match path.rsplit_once('.') {
        Some((sections, key)) => (Some(sections), key),
        None => (None, path),
    };
    let table = sections
        .into_iter()
        .flat_map(|s| s.split('.'))
        .try_fold(table, |t, section| t.get(section).and_then(toml::Value::as_table))?;
    table.get(key).and_then(toml::Value::as_str)
}

/// Labels in `selector` all appear, with the same values, in `labels`.
fn selects(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let (Some(sel), Some(labels)) = (selector.and_then(Value::as_mapping), labels) else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn k8s_manifests_parse() {
    let docs = load_manifests();

    for d in &docs {
        for field in ["apiVersion", "kind", "metadata.name"] {
            assert!(str_at(&d.value, field).is_some(), "{}: document without {field}", d.what());
        }
        if d.kind() != "Namespace" {
            assert_eq!(str_at(&d.value, "metadata.namespace"), Some("augur"), "{}: namespace", d.what());
        }
    }

    // --- agent DaemonSet -------------------------------------------------------------
    let ds = find(&docs, "DaemonSet", "augur-agent");
    let pod = at(&ds.value, "spec.template.spec").expect("DaemonSet pod spec");
    assert_eq!(pod.get("hostPID").and_then(Value::as_bool), Some(true), "DaemonSet: hostPID");
    assert_eq!(pod.get("hostNetwork").and_then(Value::as_bool), Some(true), "DaemonSet: hostNetwork");
    assert_eq!(str_at(pod, "dnsPolicy"), Some("ClusterFirstWithHostNet"), "hostNetwork pods need it for Service names");
    assert_eq!(str_at(pod, "priorityClassName"), Some("system-node-critical"));
    assert!(
        seq_at(pod, "tolerations").iter().any(|t| str_at(t, "operator") == Some("Exists") && t.get("key").is_none()),
        "DaemonSet must tolerate every taint"
    );
    assert!(
        selects(at(&ds.value, "spec.selector.matchLabels"), at(&ds.value, "spec.template.metadata.labels")),
        "DaemonSet selector does not match its pod labels"
    );

    // hostPath volumes by name -> host path.
    let host_paths = seq_at(pod, "volumes")
        .iter()
        .filter_map(|v| Some((str_at(v, "name")?.to_owned(), str_at(v, "hostPath.path")?.to_owned())))
        .collect::<BTreeMap<_, _>>();
    let containers = seq_at(pod, "containers");
    assert_eq!(containers.len(), 1, "the agent pod has one container");
    let agent = &containers[0];
    let mounts = seq_at(agent, "volumeMounts");
    let mut host_mounts = BTreeSet::new();
    let mut mount_paths = BTreeSet::new();
    for m in mounts {
        let volume = str_at(m, "name").expect("volumeMount name");
        let mount_path = str_at(m, "mountPath").expect("volumeMount mountPath");
        mount_paths.insert(mount_path.to_owned());
        let Some(host_path) = host_paths.get(volume) else {
            continue;
        };
        if ["/proc", "/sys", "/sys/fs/cgroup", "/"].contains(&host_path.as_str()) {
            assert_eq!(
                m.get("readOnly").and_then(Value::as_bool),
                Some(true),
                "hostPath {host_path} is mounted at {mount_path} without readOnly: true"
            );
            host_mounts.insert(host_path.clone());
        }
    }
    let expected = ["/", "/proc", "/sys", "/sys/fs/cgroup"].map(str::to_owned).into_iter().collect::<BTreeSet<_>>();
    assert_eq!(host_mounts, expected, "the agent must see the host's /proc, /sys, cgroups and / (read-only)");
    let root_mount = mounts
        .iter()
        .find(|m| str_at(m, "name").and_then(|n| host_paths.get(n)).is_some_and(|p| p == "/"))
        .expect("mount of the host's /");
    assert_eq!(str_at(root_mount, "mountPropagation"), Some("HostToContainer"), "host / mount propagation");
    assert_eq!(
        seq_at(pod, "volumes")
            .iter()
            .find(|v| str_at(v, "hostPath.path") == Some("/var/lib/augur-agent"))
            .and_then(|v| str_at(v, "hostPath.type")),
        Some("DirectoryOrCreate"),
        "the spool lives in a hostPath /var/lib/augur-agent (DirectoryOrCreate)"
    );

    for (kind, res) in [("requests", ["cpu", "memory"]), ("limits", ["cpu", "memory"])] {
        for r in res {
            assert!(
                str_at(agent, &format!("resources.{kind}.{r}")).is_some(),
                "agent container lacks resources.{kind}.{r}"
            );
        }
    }
    assert_eq!(str_at(agent, "resources.limits.memory"), Some("64Mi"));
    assert_eq!(at(agent, "securityContext.readOnlyRootFilesystem").and_then(Value::as_bool), Some(true));
    assert_eq!(at(agent, "securityContext.allowPrivilegeEscalation").and_then(Value::as_bool), Some(false));

    // --host-id comes from the node's name, not the pod's hostname.
    let args = seq_at(agent, "args").iter().filter_map(Value::as_str).collect::<Vec<_>>();
    let host_id = args.iter().position(|a| *a == "--host-id").and_then(|i| args.get(i + 1));
    assert_eq!(host_id, Some(&"$(NODE_NAME)"), "agent args: {args:?}");
    assert!(
        seq_at(agent, "env").iter().any(|e| str_at(e, "name") == Some("NODE_NAME")
            && str_at(e, "valueFrom.fieldRef.fieldPath") == Some("spec.nodeName")),
        "NODE_NAME must come from spec.nodeName"
    );
    let config_arg =
        args.iter().position(|a| *a == "--config").and_then(|i| args.get(i + 1)).expect("--config in args");

    // The embedded agent.toml is valid, is the file --config names, and points the
    // samplers at paths the pod actually mounts.
    let agent_toml = assert_embedded_config_valid(&docs, "augur-agent-config", "agent.toml", "augur-agent");
    let config_volume = seq_at(pod, "volumes")
        .iter()
        .find(|v| str_at(v, "configMap.name") == Some("augur-agent-config"))
        .and_then(|v| str_at(v, "name"))
        .expect("a volume from ConfigMap augur-agent-config");
    let config_dir = mounts
        .iter()
        .find(|m| str_at(m, "name") == Some(config_volume))
        .and_then(|m| str_at(m, "mountPath"))
        .expect("the config volume is mounted");
    assert_eq!(*config_arg, format!("{config_dir}/agent.toml"), "--config names the mounted ConfigMap");
    let cfg: toml::Table = toml::from_str(&agent_toml).expect("agent.toml is TOML");
    for key in [
        "state_dir",
        "host.proc_root",
        "host.sys_root",
        "host.rootfs",
        "containers.cgroup_root",
        "containers.proc_root",
    ] {
        let value = toml_str(&cfg, key).unwrap_or_else(|| panic!("agent.toml in the ConfigMap sets no {key}"));
        assert!(
            mount_paths.contains(value),
            "agent.toml {key} = {value:?} is not a mountPath of the DaemonSet ({mount_paths:?})"
        );
    }

    // --- aggregator StatefulSet ------------------------------------------------------
    let sts = find(&docs, "StatefulSet", "augur-aggregator");
    let claims = seq_at(&sts.value, "spec.volumeClaimTemplates");
    assert!(!claims.is_empty(), "StatefulSet without volumeClaimTemplates");
    assert_eq!(str_at(&claims[0], "spec.resources.requests.storage"), Some("50Gi"));
    assert_eq!(at(&sts.value, "spec.replicas").and_then(Value::as_u64), Some(1));
    let pod_labels = at(&sts.value, "spec.template.metadata.labels");
    assert!(selects(at(&sts.value, "spec.selector.matchLabels"), pod_labels), "StatefulSet selector vs pod labels");
    let spod = at(&sts.value, "spec.template.spec").expect("StatefulSet pod spec");
    assert_eq!(
        at(spod, "securityContext.runAsNonRoot").and_then(Value::as_bool),
        Some(true),
        "aggregator runAsNonRoot"
    );
    let agg = &seq_at(spod, "containers")[0];
    for r in ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory"] {
        assert!(at(agg, &format!("resources.{r}")).is_some(), "aggregator container lacks resources.{r}");
    }
    assert!(at(agg, "readinessProbe.tcpSocket").is_some(), "aggregator readiness via tcpSocket");
    let claim_name = str_at(&claims[0], "metadata.name").expect("claim name");
    assert!(
        seq_at(agg, "volumeMounts").iter().any(|m| str_at(m, "name") == Some(claim_name)),
        "the claimed volume is mounted"
    );

    // Both Services select the aggregator pods on 7461; the headless one governs the set.
    let service_name = str_at(&sts.value, "spec.serviceName").expect("serviceName");
    let headless = find(&docs, "Service", service_name);
    assert_eq!(str_at(&headless.value, "spec.clusterIP"), Some("None"), "{} must be headless", headless.what());
    for svc in docs.iter().filter(|d| d.kind() == "Service") {
        assert!(selects(at(&svc.value, "spec.selector"), pod_labels), "{} does not select the aggregator", svc.what());
        assert!(
            seq_at(&svc.value, "spec.ports").iter().any(|p| at(p, "port").and_then(Value::as_u64) == Some(7461)),
            "{} has no port 7461",
            svc.what()
        );
    }
    // The agents' aggregator URL names the ClusterIP Service.
    assert!(
        agent_toml.contains("http://augur-aggregator.augur.svc"),
        "agent.toml does not point at the aggregator Service"
    );
    find(&docs, "Service", "augur-aggregator");

    assert_embedded_config_valid(&docs, "augur-aggregator-config", "aggregator.toml", "augur-aggregator");
}

// ---------------------------------------------------------------------------------------
// Debian packages

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = run(Command::new("dpkg-deb").args(args).arg(deb));
    assert!(out.status.success(), "dpkg-deb {args:?} {}:\n{}", deb.display(), both(&out));
    text(&out.stdout)
}

/// One file of a package's control archive (`conffiles`, `postinst`, ...).
fn control_file(deb: &Path, name: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("--info").arg(deb).arg(name));
    assert!(out.status.success(), "dpkg-deb --info {} {name}:\n{}", deb.display(), both(&out));
    text(&out.stdout)
}

#[test]
fn deb_packages_build() {
    if !have("dpkg-deb") && skip("deb_packages_build", "dpkg-deb not installed") {
        return;
    }
    for b in ["augur-agent", "augur-aggregator", "augurctl"] {
        bin(b); // panics with a clear message when the binaries are not built
    }
    let version = env!("CARGO_PKG_VERSION");
    let arch = text(&run(Command::new("dpkg").arg("--print-architecture")).stdout).trim().to_owned();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let script = repo_root().join("packaging/debian/build-deb.sh");
    // Twice: the script must be idempotent.
    for _ in 0..2 {
        // Uncompressed: xz on debug binaries takes minutes; compression is dpkg's business.
        let mut cmd = Command::new(&script);
        cmd.arg(bin_dir()).arg(out_dir.path()).arg(version).env("DEB_COMPRESSION", "none");
        let out = run(&mut cmd);
        assert!(out.status.success(), "build-deb.sh:\n{}", both(&out));
    }

    let packages: [(&str, &[&str], &str, &[&str]); 2] = [
        ("augur-agent", &["augur-agent"], "agent.toml", &["libc6"]),
        ("augur-aggregator", &["augur-aggregator", "augurctl"], "aggregator.toml", &["libc6", "libstdc++6"]),
    ];
    for (pkg, binaries, config, depends) in packages {
        let deb = out_dir.path().join(format!("{pkg}_{version}_{arch}.deb"));
        assert!(deb.exists(), "{} was not built", deb.display());

        let info = dpkg_deb(&["--info"], &deb);
        assert!(info.contains(&format!("Package: {pkg}")), "{pkg} info:\n{info}");
        assert!(info.contains(&format!("Version: {version}")), "{pkg} info:\n{info}");
        let depends_line = info.lines().find(|l| l.trim_start().starts_with("Depends:")).unwrap_or("");
        for d in depends {
            assert!(depends_line.contains(d), "{pkg} Depends: lacks {d}: {depends_line:?}");
        }
        for script in ["postinst", "prerm", "postrm", "conffiles"] {
            assert!(info.contains(script), "{pkg} has no {script}:\n{info}");
        }
        let conffiles = control_file(&deb, "conffiles");
        assert_eq!(conffiles.trim(), format!("/etc/augur/{config}"), "{pkg} conffiles");
        // Service management only where systemd is the running init.
        let postinst = control_file(&deb, "postinst");
        assert!(postinst.contains("/run/systemd/system"), "{pkg} postinst does not check for systemd:\n{postinst}");

        let contents = dpkg_deb(&["--contents"], &deb);
        let mut expected = vec![format!("./lib/systemd/system/{pkg}.service"), format!("./etc/augur/{config}")];
        expected.extend(binaries.iter().map(|b| format!("./usr/bin/{b}")));
        for path in &expected {
            assert!(contents.lines().any(|l| l.ends_with(path.as_str())), "{pkg} does not contain {path}:\n{contents}");
        }
        assert!(contents.lines().all(|l| l.contains(" root/root ")), "{pkg}: files not owned by root:\n{contents}");

        // What is inside is exactly what the repo and the build hold.
        let tree = tempfile::tempdir().expect("tempdir");
        let out = run(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(tree.path()));
        assert!(out.status.success(), "dpkg-deb --extract:\n{}", both(&out));
        let same = |packaged: &str, source: PathBuf| {
            let a = std::fs::read(tree.path().join(packaged)).expect("packaged file");
            let b = std::fs::read(&source).expect("source file");
            assert!(a == b, "{pkg}: {packaged} differs from {}", source.display());
        };
        same(&format!("lib/systemd/system/{pkg}.service"), repo_root().join("systemd").join(format!("{pkg}.service")));
        same(&format!("etc/augur/{config}"), example_config(config));
        for b in binaries {
            same(&format!("usr/bin/{b}"), bin(b));
        }
    }
}
