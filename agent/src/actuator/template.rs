//! Config templates: render `{{var}}` placeholders, write the destination atomically
//! (temp file in the same directory, fsync, rename, fsync the directory), run the reload
//! command, and restore the previous file (then reload again) when the reload or the
//! health check fails, or when a rollback command asks.
//!
//! The previous destination is copied to `<state_dir>/config/<workload>/<template>/` before
//! each write; the newest `keep` copies are kept.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Plan, Step, StepError};
use crate::workload::{TemplateConfig, WorkloadConfig};

/// Renders `text`: every `{{ name }}` needs a value, and every value must be used.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut used = std::collections::BTreeSet::new();
    let mut missing = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err("unclosed {{ in template".into());
        };
        let name = after[..j].trim();
        match vars.get(name) {
            Some(v) => {
                out.push_str(v);
                used.insert(name.to_owned());
            }
            None => {
                missing.insert(name.to_owned());
            }
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    if !missing.is_empty() {
        return Err(format!(
            "template needs {}",
            missing.iter().map(|m| format!("var.{m}")).collect::<Vec<_>>().join(", ")
        ));
    }
    let unused: Vec<_> = vars.keys().filter(|k| *k != "version" && !used.contains(*k)).collect();
    if !unused.is_empty() {
        return Err(format!(
            "template does not use {}",
            unused.iter().map(|m| format!("var.{m}")).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(out)
}

fn backup_dir(state_dir: &Path, workload: &str, t: &TemplateConfig) -> PathBuf {
    state_dir.join("config").join(workload).join(&t.name)
}

/// Plan of a `config` command.
pub fn plan_config(
    state_dir: &Path,
    w: &WorkloadConfig,
    template: &str,
    version: &str,
    vars: &BTreeMap<String, String>,
    command_id: &str,
) -> Result<Plan, String> {
    let t = w.template(template).ok_or_else(|| format!("workload {:?} has no template {template:?}", w.name))?;
    let text =
        fs::read_to_string(&t.source).map_err(|e| format!("cannot read template {}: {e}", t.source.display()))?;
    let mut all = vars.clone();
    all.entry("version".into()).or_insert_with(|| version.to_owned());
    let content = render(&text, &all).map_err(|e| format!("template {template:?}: {e}"))?;
    let backup = t
        .destination
        .exists()
        .then(|| backup_dir(state_dir, &w.name, t).join(format!("{}-{command_id}", augur_core::time::now_ms())));
    let reload = (!t.reload.is_empty())
        .then(|| Step::Run { argv: t.reload.clone(), timeout_ms: t.reload_timeout.as_millis() as u64 });
    let mut plan = Plan { health_check: true, ..Plan::default() };
    plan.details.insert("destination".into(), t.destination.display().to_string());
    plan.details.insert("version".into(), version.into());
    let mut undo = vec![Step::RestoreFile { path: t.destination.clone(), backup: backup.clone() }];
    undo.extend(reload.clone());
    plan.push(Step::WriteFile { path: t.destination.clone(), content, backup }, undo);
    if let Some(r) = reload {
        plan.push(r, Vec::new());
    }
    Ok(plan)
}

/// Writes `content` to `path` atomically: temp file beside it, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.augur-tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        if let Ok(meta) = fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Copies the current `path` to `backup` (durably), then writes `content` atomically.
pub fn write_with_backup(path: &Path, content: &[u8], backup: Option<&Path>) -> Result<(), StepError> {
    if let Some(b) = backup {
        let current = fs::read(path)
            .map_err(|e| StepError::Failed(format!("cannot read {} to back it up: {e}", path.display())))?;
        if let Some(d) = b.parent() {
            fs::create_dir_all(d).map_err(|e| StepError::Failed(format!("cannot create {}: {e}", d.display())))?;
        }
        write_atomic(b, &current)
            .map_err(|e| StepError::Failed(format!("cannot write backup {}: {e}", b.display())))?;
    }
    write_atomic(path, content).map_err(|e| StepError::Failed(format!("cannot write {}: {e}", path.display())))
}

/// Puts `path` back from `backup`, or removes it when there was no previous file.
pub fn restore(path: &Path, backup: Option<&Path>) -> Result<(), StepError> {
    match backup {
        Some(b) => {
            let prev =
                fs::read(b).map_err(|e| StepError::Failed(format!("cannot read backup {}: {e}", b.display())))?;
            write_atomic(path, &prev).map_err(|e| StepError::Failed(format!("cannot restore {}: {e}", path.display())))
        }
        None => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StepError::Failed(format!("cannot remove {}: {e}", path.display()))),
        },
    }
}

/// Keeps the newest `keep` backups of a template (names start with the time in ms).
pub fn prune_backups(state_dir: &Path, workload: &str, t: &TemplateConfig) {
    let dir = backup_dir(state_dir, workload, t);
    let Ok(rd) = fs::read_dir(&dir) else { return };
    let mut files: Vec<(i64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.split_once('-').and_then(|(t, _)| t.parse().ok()).map(|t| (t, e.path()))
        })
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(t.keep);
    for (_, p) in files.into_iter().take(excess) {
        if let Err(e) = fs::remove_file(&p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove an old config backup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn render_fills_placeholders_and_names_missing_and_unused_vars() {
        let t = "workers = {{ workers }}\nport={{port}} # {{version}}\n";
        assert_eq!(
            render(t, &vars(&[("workers", "8"), ("port", "80"), ("version", "v2")])).expect("render"),
            "workers = 8\nport=80 # v2\n"
        );
        assert_eq!(render(t, &vars(&[("workers", "8"), ("version", "v2")])), Err("template needs var.port".into()));
        assert_eq!(
            render("x", &vars(&[("wokers", "8"), ("version", "v")])),
            Err("template does not use var.wokers".into())
        );
        assert!(render("{{x", &vars(&[])).is_err());
    }

    #[test]
    fn atomic_write_replaces_and_restore_puts_back_or_removes() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.conf");
        let b = d.path().join("backups/1-c1");
        fs::write(&p, "old").expect("seed");
        write_with_backup(&p, b"new", Some(&b)).expect("write");
        assert_eq!(fs::read_to_string(&p).expect("read"), "new");
        assert_eq!(fs::read_to_string(&b).expect("backup"), "old");
        restore(&p, Some(&b)).expect("restore");
        assert_eq!(fs::read_to_string(&p).expect("read"), "old");
        restore(&p, None).expect("remove");
        assert!(!p.exists());
        let leftovers: Vec<_> = fs::read_dir(d.path())
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("augur-tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
