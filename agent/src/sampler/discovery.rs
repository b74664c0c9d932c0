//! Cgroup discovery: where the hierarchies are mounted (v1, v2 or hybrid) and which
//! cgroups are containers, pods, systemd services or named workloads.
//!
//! Layout detection reads the mount table: each v1 controller is its own mount (possibly
//! comma-combined, `cpu,cpuacct`), the v2 hierarchy is a `cgroup2` mount either at the
//! cgroup root (pure v2, `cgroup.controllers` present) or at `<root>/unified` (hybrid).
//! Mount points outside the configured root (an agent reading the host's cgroup tree
//! bind-mounted elsewhere, or fixture trees) are mapped by their last path component.
//!
//! Naming ([`classify`]) is a pure function of the cgroup's path relative to the
//! hierarchy root:
//! - Kubernetes: a path under `kubepods*` with a pod component (`pod<uid>` or
//!   `kubepods-<qos>-pod<uid_with_underscores>.slice`) ending in a container ID
//!   → `pod/<uid>/<first 12 of id>`.
//! - Docker: `docker/<id>` or `docker-<id>.scope` → `container/<first 12>`.
//! - containerd/CRI outside Kubernetes: `cri-containerd-`, `containerd-`, `nerdctl-`,
//!   `crio-`, `libpod-<id>.scope` or a bare ID under a namespace directory such as
//!   `default/<id>` → `container/<first 12>`.
//! - systemd: `system.slice/<unit>.service` → `service/<unit>.service`.
//!
//! Named cgroups (`cgroup/<name>`) and children of watched prefixes
//! (`cgroup/<relative path>`) come from the config and win over the walk when the same
//! cgroup is found twice.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use super::procfs;
use super::{ErrorLog, SampleError};

/// Where a cgroup's files for one controller live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// v1 `cpu` (CFS quota and throttling).
    Cpu = 0,
    /// v1 `cpuacct` (usage).
    Cpuacct = 1,
    /// v1 `memory`.
    Memory = 2,
    /// v1 `blkio`.
    Blkio = 3,
    /// v1 `pids`.
    Pids = 4,
    /// The v2 (unified) hierarchy.
    Unified = 5,
}

/// Number of [`Slot`]s.
pub(crate) const SLOTS: usize = 6;

/// Order in which hierarchies are preferred for walking and for deciding whether a
/// cgroup still exists.
const PRIMARY_ORDER: [Slot; SLOTS] = [Slot::Memory, Slot::Unified, Slot::Cpuacct, Slot::Cpu, Slot::Pids, Slot::Blkio];

/// The cgroup hierarchies found on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Root directory of each slot's hierarchy, if mounted.
    pub roots: [Option<PathBuf>; SLOTS],
    /// Whether v1 blkio has the `_recursive` throttle files (kernel 4.12+), which include
    /// the I/O of descendant cgroups.
    pub blkio_recursive: bool,
}

impl Layout {
    /// The root of one slot's hierarchy.
    pub(crate) fn root(&self, slot: Slot) -> Option<&Path> {
        self.roots[slot as usize].as_deref()
    }

    /// Whether any v1 controller we read is mounted.
    pub(crate) fn has_v1(&self) -> bool {
        self.roots[..Slot::Unified as usize].iter().any(Option::is_some)
    }

    /// The hierarchy walked to find containers: v1 memory if mounted, else the unified one.
    pub(crate) fn primary(&self) -> Option<&Path> {
        PRIMARY_ORDER.iter().find_map(|&s| self.root(s))
    }

    /// `v1`, `v2`, `hybrid` or `none`, for logs.
    pub(crate) fn describe(&self) -> &'static str {
        match (self.has_v1(), self.root(Slot::Unified).is_some()) {
            (true, true) => "hybrid",
            (true, false) => "v1",
            (false, true) => "v2",
            (false, false) => "none",
        }
    }
}

/// v1 controllers we read, by the name they have in mount options and directory names.
const V1_CONTROLLERS: [(&str, Slot); 5] = [
    ("cpu", Slot::Cpu),
    ("cpuacct", Slot::Cpuacct),
    ("memory", Slot::Memory),
    ("blkio", Slot::Blkio),
    ("pids", Slot::Pids),
];

/// Finds the hierarchies under `cgroup_root` from the mount table `mountinfo` (`None`
/// when it could not be read: the v1 controller directories are then probed by name).
pub(crate) fn detect_layout(mountinfo: Option<&str>, cgroup_root: &Path) -> Layout {
    let mut layout = Layout::default();
    match mountinfo {
        Some(text) => {
            for m in procfs::mountinfo(text).flatten() {
                let mount_point = Path::new(&*m.mount_point);
                match m.fstype {
                    "cgroup" => {
                        let dir = map_mount_point(mount_point, cgroup_root);
                        if !dir.is_dir() {
                            continue;
                        }
                        for opt in m.super_options.split(',') {
                            if let Some(&(_, slot)) = V1_CONTROLLERS.iter().find(|(n, _)| *n == opt) {
                                layout.roots[slot as usize].get_or_insert_with(|| dir.clone());
                            }
                        }
                    }
                    "cgroup2"
                        if mount_point.starts_with(cgroup_root) && mount_point.join("cgroup.controllers").is_file() =>
                    {
                        layout.roots[Slot::Unified as usize].get_or_insert_with(|| mount_point.to_path_buf());
                    }
                    _ => {}
                }
            }
        }
        None => {
            for dir in ["cpu,cpuacct", "cpu", "cpuacct", "memory", "blkio", "pids"] {
                let path = cgroup_root.join(dir);
                if !path.is_dir() || path.join("cgroup.controllers").exists() {
                    continue;
                }
                for part in dir.split(',') {
                    if let Some(&(_, slot)) = V1_CONTROLLERS.iter().find(|(n, _)| *n == part) {
                        layout.roots[slot as usize].get_or_insert_with(|| path.clone());
                    }
                }
            }
        }
    }
    if layout.roots[Slot::Unified as usize].is_none() {
        for dir in [cgroup_root.to_path_buf(), cgroup_root.join("unified")] {
            if dir.join("cgroup.controllers").is_file() {
                layout.roots[Slot::Unified as usize] = Some(dir);
                break;
            }
        }
    }
    layout.blkio_recursive =
        layout.root(Slot::Blkio).is_some_and(|b| b.join("blkio.throttle.io_service_bytes_recursive").exists());
    layout
}

/// A mount point under `cgroup_root` is used as is; any other is taken to be the same
/// controller directory under `cgroup_root` (`/sys/fs/cgroup/memory` →
/// `<cgroup_root>/memory`).
fn map_mount_point(mount_point: &Path, cgroup_root: &Path) -> PathBuf {
    if mount_point.starts_with(cgroup_root) {
        return mount_point.to_path_buf();
    }
    match mount_point.file_name() {
        Some(name) => cgroup_root.join(name),
        None => cgroup_root.to_path_buf(),
    }
}

/// Which container runtimes and service managers discovery looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Runtimes {
    pub docker: bool,
    pub containerd: bool,
    pub kubernetes: bool,
    pub systemd_services: bool,
}

impl Runtimes {
    fn any(self) -> bool {
        self.docker || self.containerd || self.kubernetes || self.systemd_services
    }
}

/// Prefixes of systemd scope names that wrap a container ID, and whether they are Docker's.
const ID_PREFIXES: [&str; 6] = ["docker-", "cri-containerd-", "containerd-", "nerdctl-", "crio-", "libpod-"];

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The runtime prefix (`""` for a bare ID) and the 64-hex container ID of a cgroup
/// directory name.
fn container_id(name: &str) -> Option<(&str, &str)> {
    let base = name.strip_suffix(".scope").unwrap_or(name);
    if is_container_id(base) {
        return Some(("", base));
    }
    ID_PREFIXES.iter().find_map(|p| base.strip_prefix(p).filter(|id| is_container_id(id)).map(|id| (*p, id)))
}

/// The pod UID in a Kubernetes pod cgroup's directory name: `pod<uid>` (cgroupfs driver)
/// or `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd driver).
fn pod_uid(name: &str) -> Option<String> {
    let raw = if let Some(slice) = name.strip_suffix(".slice") {
        let at = slice.rfind("-pod")?;
        &slice[at + 4..]
    } else {
        name.strip_prefix("pod")?
    };
    let ok = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| raw.replace('_', "-"))
}

/// The resource name of the cgroup at `rel` (relative to the hierarchy root, no leading
/// `/`), or `None` when it is not a workload of an enabled kind.
pub(crate) fn classify(rel: &str, rt: Runtimes) -> Option<String> {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let (&last, ancestors) = comps.split_last()?;
    let id = container_id(last);
    if ancestors.iter().any(|c| c.starts_with("kubepods")) {
        if !rt.kubernetes {
            return None;
        }
        let (_, id) = id?;
        let uid = ancestors.iter().rev().find_map(|c| pod_uid(c))?;
        return Some(format!("pod/{uid}/{}", &id[..12]));
    }
    if let Some((prefix, id)) = id {
        let parent = ancestors.last().copied();
        let docker = prefix == "docker-" || (prefix.is_empty() && parent == Some("docker"));
        let enabled = if docker { rt.docker } else { rt.containerd };
        return enabled.then(|| format!("container/{}", &id[..12]));
    }
    if rt.systemd_services && comps.len() == 2 && comps[0] == "system.slice" && last.ends_with(".service") {
        return Some(format!("service/{last}"));
    }
    None
}

/// Normalises a configured relative cgroup path; `None` when it is empty or escapes the
/// hierarchy (`..`).
pub(crate) fn clean_rel(path: &str) -> Option<String> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if comps.is_empty() || comps.contains(&"..") {
        return None;
    }
    Some(comps.join("/"))
}

/// Deepest level of the walk (the Kubernetes systemd layout needs 4).
const MAX_WALK_DEPTH: usize = 8;
/// Upper bound of directories visited per walk, so a pathological tree cannot make
/// discovery expensive.
const MAX_WALK_DIRS: usize = 20_000;

/// A workload cgroup found by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Path relative to the hierarchy roots.
    pub rel: String,
    /// Resource name (`container/…`, `pod/…`, `service/…`, `cgroup/…`).
    pub resource: String,
}

/// What discovery looks for, from the container sampler's config.
pub(crate) struct Wanted<'a> {
    /// Explicitly named cgroups: (name, relative path).
    pub named: &'a [(String, String)],
    /// Relative paths whose direct children are workloads.
    pub watch_prefixes: &'a [String],
    pub runtimes: Runtimes,
}

/// Finds the workload cgroups of `layout`: named ones first, then children of watched
/// prefixes, then the walk, each cgroup once.
pub(crate) fn find(layout: &Layout, wanted: &Wanted<'_>, errors: &mut ErrorLog) -> Vec<Found> {
    let mut found = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let Some(primary) = layout.primary() else {
        return found;
    };
    for (name, rel) in wanted.named {
        let exists = layout.roots.iter().flatten().any(|r| r.join(rel).is_dir());
        if exists && seen.insert(rel.clone()) {
            found.push(Found { rel: rel.clone(), resource: format!("cgroup/{name}") });
        }
    }
    for prefix in wanted.watch_prefixes {
        let dir = primary.join(prefix);
        for child in list_subdirs(&dir, errors) {
            let rel = format!("{prefix}/{child}");
            if seen.insert(rel.clone()) {
                found.push(Found { resource: format!("cgroup/{rel}"), rel });
            }
        }
    }
    if wanted.runtimes.any() {
        walk(primary, wanted.runtimes, &mut seen, &mut found, errors);
    }
    found
}

/// Names of the subdirectories of `dir`; a missing directory is empty, not an error.
fn list_subdirs(dir: &Path, errors: &mut ErrorLog) -> Vec<String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(source) => {
            errors.record(SampleError::ListDir { path: dir.to_path_buf(), source });
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort_unstable();
    names
}

/// Depth-first walk of the hierarchy at `root`; a classified cgroup is not descended
/// into (its children belong to it).
fn walk(root: &Path, rt: Runtimes, seen: &mut HashSet<String>, found: &mut Vec<Found>, errors: &mut ErrorLog) {
    let mut stack: Vec<(String, usize)> = vec![(String::new(), 0)];
    let mut visited = 0usize;
    while let Some((rel, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_WALK_DIRS {
            tracing::debug!(root = %root.display(), "cgroup walk stopped at {MAX_WALK_DIRS} directories");
            break;
        }
        let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(&rel) };
        // Children in reverse so the stack pops them in name order.
        for child in list_subdirs(&dir, errors).into_iter().rev() {
            let child_rel = if rel.is_empty() { child } else { format!("{rel}/{child}") };
            if seen.contains(&child_rel) {
                continue;
            }
            match classify(&child_rel, rt) {
                Some(resource) => {
                    seen.insert(child_rel.clone());
                    found.push(Found { rel: child_rel, resource });
                }
                None if depth + 1 < MAX_WALK_DEPTH => stack.push((child_rel, depth + 1)),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    const ALL: Runtimes = Runtimes { docker: true, containerd: true, kubernetes: true, systemd_services: true };

    #[test]
    fn classify_docker_layouts() {
        assert_eq!(classify(&format!("docker/{ID}"), ALL).as_deref(), Some("container/3f4e5d6c7b8a"));
        assert_eq!(
            classify(&format!("system.slice/docker-{ID}.scope"), ALL).as_deref(),
            Some("container/3f4e5d6c7b8a")
        );
        let no_docker = Runtimes { docker: false, ..ALL };
        assert_eq!(classify(&format!("docker/{ID}"), no_docker), None);
        assert_eq!(classify("docker/not-an-id", ALL), None);
        assert_eq!(classify(&format!("docker/{}", &ID[..63]), ALL), None);
    }

    #[test]
    fn classify_containerd_layouts() {
        for rel in [
            format!("default/{ID}"),
            format!("k8s.io/{ID}"),
            format!("system.slice/cri-containerd-{ID}.scope"),
            format!("nerdctl.slice/nerdctl-{ID}.scope"),
        ] {
            assert_eq!(classify(&rel, ALL).as_deref(), Some("container/3f4e5d6c7b8a"), "{rel}");
        }
        let no_containerd = Runtimes { containerd: false, ..ALL };
        assert_eq!(classify(&format!("default/{ID}"), no_containerd), None);
    }

    #[test]
    fn classify_kubernetes_layouts() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let uid_ = uid.replace('-', "_");
        let want = format!("pod/{uid}/3f4e5d6c7b8a");
        for rel in [
            format!("kubepods/pod{uid}/{ID}"),
            format!("kubepods/burstable/pod{uid}/{ID}"),
            format!("kubepods/besteffort/pod{uid}/{ID}"),
            format!("kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope"),
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
            ),
            format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope"),
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/docker-{ID}.scope"),
        ] {
            assert_eq!(classify(&rel, ALL).as_deref(), Some(want.as_str()), "{rel}");
        }
        // The pod and QoS levels themselves are not workloads; the walk descends into them.
        assert_eq!(classify(&format!("kubepods/burstable/pod{uid}"), ALL), None);
        assert_eq!(classify("kubepods.slice/kubepods-burstable.slice", ALL), None);
        let no_kube = Runtimes { kubernetes: false, ..ALL };
        assert_eq!(classify(&format!("kubepods/burstable/pod{uid}/{ID}"), no_kube), None);
    }

    #[test]
    fn classify_systemd_services() {
        assert_eq!(classify("system.slice/nginx.service", ALL).as_deref(), Some("service/nginx.service"));
        assert_eq!(classify("system.slice/getty@tty1.service", ALL).as_deref(), Some("service/getty@tty1.service"));
        assert_eq!(classify("system.slice/session-1.scope", ALL), None);
        assert_eq!(classify("user.slice/user-0.slice/foo.service", ALL), None);
        assert_eq!(classify("system.slice", ALL), None);
        let no_sd = Runtimes { systemd_services: false, ..ALL };
        assert_eq!(classify("system.slice/nginx.service", no_sd), None);
    }

    #[test]
    fn clean_rel_rejects_escapes() {
        assert_eq!(clean_rel("/augur-demo//web/").as_deref(), Some("augur-demo/web"));
        assert_eq!(clean_rel("./a"), Some("a".to_owned()));
        assert_eq!(clean_rel("../etc"), None);
        assert_eq!(clean_rel("/"), None);
    }

    #[test]
    fn layout_v1_with_combined_cpu_cpuacct() {
        let root = super::super::fixture("cgroup-v1/sys/fs/cgroup");
        let mi = std::fs::read_to_string(super::super::fixture("cgroup-v1/proc/self/mountinfo")).expect("fixture");
        let l = detect_layout(Some(&mi), &root);
        assert_eq!(l.describe(), "v1");
        assert_eq!(l.root(Slot::Cpu), Some(root.join("cpu,cpuacct").as_path()));
        assert_eq!(l.root(Slot::Cpuacct), Some(root.join("cpu,cpuacct").as_path()));
        assert_eq!(l.root(Slot::Memory), Some(root.join("memory").as_path()));
        assert_eq!(l.primary(), Some(root.join("memory").as_path()));
        assert!(l.blkio_recursive);
        // Without a mount table the controller directories are probed by name.
        assert_eq!(detect_layout(None, &root), l);
    }

    #[test]
    fn layout_v2_and_hybrid() {
        let root = super::super::fixture("cgroup-v2/sys/fs/cgroup");
        let mi = std::fs::read_to_string(super::super::fixture("cgroup-v2/proc/self/mountinfo")).expect("fixture");
        let l = detect_layout(Some(&mi), &root);
        assert_eq!(l.describe(), "v2");
        assert_eq!(l.primary(), Some(root.as_path()));

        let root = super::super::fixture("cgroup-hybrid/sys/fs/cgroup");
        let mi = std::fs::read_to_string(super::super::fixture("cgroup-hybrid/proc/self/mountinfo")).expect("fixture");
        let l = detect_layout(Some(&mi), &root);
        assert_eq!(l.describe(), "hybrid");
        assert_eq!(l.root(Slot::Unified), Some(root.join("unified").as_path()));
        assert_eq!(l.root(Slot::Cpu), Some(root.join("cpu").as_path()));
        assert_eq!(l.root(Slot::Cpuacct), Some(root.join("cpuacct").as_path()));
        assert_eq!(l.primary(), Some(root.join("memory").as_path()));

        let empty = detect_layout(Some(""), Path::new("/nonexistent"));
        assert_eq!(empty.describe(), "none");
        assert_eq!(empty.primary(), None);
    }
}
