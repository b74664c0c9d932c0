//! Cgroups for the agent bench: finds where the hierarchies are mounted, creates
//! `<prefix>/cg-NN` with one `sleep` process in each, and removes them all again
//! (deepest first) when the guard drops, whatever happened in between.
//!
//! On cgroup v1 a group is created under every mounted controller of [`V1_CONTROLLERS`]
//! (like `scripts/lib/cgroup.sh`); on a v2 hierarchy with the memory controller, once
//! under it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The v1 controllers the agent reads.
pub const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "blkio"];

/// Where cgroups can be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy, with controllers.
    V2(PathBuf),
    /// Mount points of the v1 controllers found (one per mount, deduplicated).
    V1(Vec<PathBuf>),
}

impl Hierarchy {
    pub fn roots(&self) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2(p) => vec![p.clone()],
            Hierarchy::V1(ps) => ps.clone(),
        }
    }
}

/// cgroup mounts listed in `/proc/self/mountinfo` text: `(fstype, mount point, super
/// options)` for every `cgroup` and `cgroup2` mount.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<(String, PathBuf, String)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fstype), Some(opts)) = (fields.get(4), fields.get(sep + 1), fields.get(sep + 3)) else {
            continue;
        };
        if *fstype == "cgroup" || *fstype == "cgroup2" {
            out.push(((*fstype).to_owned(), PathBuf::from(unescape_mount(mount)), (*opts).to_owned()));
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Picks the hierarchy to use: a v2 mount that has the memory controller
/// (`has_controllers` says which do), else the v1 controller mounts. On a hybrid host
/// the v2 mount (`/sys/fs/cgroup/unified`) may list a leftover controller such as
/// `hugetlb`; that does not make it the one to use.
pub fn choose_hierarchy(
    mounts: &[(String, PathBuf, String)],
    has_controllers: impl Fn(&Path) -> bool,
) -> Option<Hierarchy> {
    if let Some((_, p, _)) = mounts.iter().find(|(t, p, _)| t == "cgroup2" && has_controllers(p)) {
        return Some(Hierarchy::V2(p.clone()));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    for (t, p, opts) in mounts {
        if t == "cgroup" && opts.split(',').any(|o| V1_CONTROLLERS.contains(&o)) && !roots.contains(p) {
            roots.push(p.clone());
        }
    }
    (!roots.is_empty()).then_some(Hierarchy::V1(roots))
}

/// The hierarchy of this machine, from `/proc/self/mountinfo`.
pub fn detect() -> anyhow::Result<Hierarchy> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounts = cgroup_mounts(&text);
    choose_hierarchy(&mounts, |p| {
        fs::read_to_string(p.join("cgroup.controllers")).is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
    })
    .context("no cgroup v1 controller mount and no cgroup v2 mount with controllers")
}

/// Kills the processes of every cgroup under `dir` and removes the groups, deepest
/// first. Missing directories are fine.
fn destroy_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                destroy_tree(&e.path());
            }
        }
    }
    kill_members(dir);
    remove_dir_retrying(dir);
}

fn kill_members(dir: &Path) {
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<libc::pid_t>().ok()) {
            // SAFETY: kill(2) with a pid read from the cgroup; at worst it fails.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// rmdir, retrying briefly: a killed process leaves its cgroup a moment after it dies.
fn remove_dir_retrying(dir: &Path) {
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        eprintln!("warning: could not remove cgroup {}: {e}", dir.display());
    }
}

/// `count` cgroups `<prefix>/cg-NN`, each holding one `sleep`; removed on drop.
pub struct BenchCgroups {
    /// Directories created, in creation order (parents first).
    dirs: Vec<PathBuf>,
    sleepers: Vec<Child>,
}

impl BenchCgroups {
    pub fn create(h: &Hierarchy, prefix: &str, count: usize) -> anyhow::Result<Self> {
        let roots = h.roots();
        // Leftovers of an interrupted run would confuse the count.
        for root in &roots {
            destroy_tree(&root.join(prefix));
        }
        let mut me = BenchCgroups { dirs: Vec::new(), sleepers: Vec::new() };
        if let Hierarchy::V2(root) = h {
            enable_v2_controllers(root);
        }
        for root in &roots {
            let parent = root.join(prefix);
            fs::create_dir(&parent).with_context(|| format!("creating {}", parent.display()))?;
            me.dirs.push(parent.clone());
            if matches!(h, Hierarchy::V2(_)) {
                enable_v2_controllers(&parent);
            }
        }
        for i in 0..count {
            let name = format!("cg-{i:02}");
            let mut groups = Vec::with_capacity(roots.len());
            for root in &roots {
                let dir = root.join(prefix).join(&name);
                fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
                me.dirs.push(dir.clone());
                groups.push(dir);
            }
            let child = Command::new("sleep")
                .arg("86400")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting sleep")?;
            let pid = child.id();
            me.sleepers.push(child);
            for dir in &groups {
                fs::write(dir.join("cgroup.procs"), pid.to_string())
                    .with_context(|| format!("moving pid {pid} into {}", dir.display()))?;
            }
        }
        Ok(me)
    }
}

/// Best effort: lets children of `dir` use the controllers the agent reads.
fn enable_v2_controllers(dir: &Path) {
    for c in ["+memory", "+cpu", "+pids", "+io"] {
        let _ = fs::write(dir.join("cgroup.subtree_control"), c);
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        for c in &mut self.sleepers {
            let _ = c.kill();
        }
        for c in &mut self.sleepers {
            let _ = c.wait();
        }
        for dir in self.dirs.iter().rev() {
            kill_members(dir);
            remove_dir_retrying(dir);
        }
    }
}

/// Fails with the reason when this process cannot create cgroups.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the agent bench creates cgroups and must run as root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_uses_v1_controllers() {
        let mounts = cgroup_mounts(HYBRID);
        assert_eq!(mounts.len(), 8);
        let h = choose_hierarchy(&mounts, |_| false).expect("hierarchy");
        let want: Vec<PathBuf> = ["cpu", "cpuacct", "memory", "blkio", "pids"]
            .iter()
            .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}")))
            .collect();
        assert_eq!(h, Hierarchy::V1(want));
    }

    #[test]
    fn v2_with_controllers_wins() {
        let text = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = choose_hierarchy(&cgroup_mounts(text), |p| p == Path::new("/sys/fs/cgroup"));
        assert_eq!(h, Some(Hierarchy::V2(PathBuf::from("/sys/fs/cgroup"))));
        assert_eq!(choose_hierarchy(&cgroup_mounts(text), |_| false), None);
    }

    #[test]
    fn combined_v1_mounts_are_listed_once() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = choose_hierarchy(&cgroup_mounts(text), |_| false);
        assert_eq!(h, Some(Hierarchy::V1(vec![PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")])));
    }

    #[test]
    fn escaped_mount_points() {
        assert_eq!(unescape_mount(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount(r"/plain\"), r"/plain\");
    }
}
