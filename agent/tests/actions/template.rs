//! Config templates: atomic write, reload, rollback on a failed reload or health check,
//! rollback command, dry run.

use std::path::Path;
use std::time::Duration;

use augur_agent::actuator::Status;
use augur_agent::workload::{TemplateConfig, WorkloadConfig};

use crate::{cmd, executor, health_command, read};

/// A workload with template `app.conf`; its reload command checks the rendered file the
/// way a real daemon's config test would (`workers` must be a number).
fn app(dir: &Path, health: &[&str]) -> WorkloadConfig {
    std::fs::write(dir.join("app.conf.tmpl"), "# version {{version}}\nworkers = {{workers}}\n").expect("template");
    let dest = dir.join("app.conf");
    let mut w = WorkloadConfig::named("app");
    w.allowed_actions = vec!["config".into()];
    w.health = Some(health_command(health));
    w.templates = vec![TemplateConfig {
        name: "app.conf".into(),
        source: dir.join("app.conf.tmpl"),
        destination: dest.clone(),
        reload: vec![
            "sh".into(),
            "-c".into(),
            format!("grep -Eq '^workers = [0-9]+$' {d} && cp {d} {d}.loaded", d = dest.display()),
        ],
        reload_timeout: Duration::from_secs(5),
        keep: 2,
    }];
    w
}

#[tokio::test]
async fn config_is_written_atomically_reloaded_and_rolled_back_on_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("app.conf");
    std::fs::write(&dest, "workers = 1\n").expect("original");
    let mut ex = executor(state.path(), Path::new("/nonexistent"), &[app(dir.path(), &["true"])]);

    let mut dry = cmd("c0", "app", "config", &[("template", "app.conf"), ("version", "v2"), ("var.workers", "8")]);
    dry.dry_run = true;
    let o = ex.execute(&dry).await;
    assert_eq!(o.status, Status::DryRun, "{o:?}");
    assert_eq!(o.details["would.1.content"], "# version v2\nworkers = 8\n");
    assert!(o.details["would.2"].contains("grep"), "{o:?}");
    assert_eq!(read(&dest), "workers = 1", "dry run wrote the file");

    let o = ex
        .execute(&cmd("c1", "app", "config", &[("template", "app.conf"), ("version", "v2"), ("var.workers", "8")]))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&dest), "# version v2\nworkers = 8");
    assert_eq!(read(&dir.path().join("app.conf.loaded")), "# version v2\nworkers = 8", "reload ran on the new file");

    // The reload refuses the new file: the previous one is back and reloaded.
    let o = ex
        .execute(&cmd("c2", "app", "config", &[("template", "app.conf"), ("version", "v3"), ("var.workers", "many")]))
        .await;
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert!(o.message.contains("undone"), "{o:?}");
    assert_eq!(read(&dest), "# version v2\nworkers = 8");

    // Missing and unused variables are refused before anything is written.
    let o = ex.execute(&cmd("c3", "app", "config", &[("template", "app.conf"), ("version", "v4")])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
    assert!(o.message.contains("var.workers"), "{o:?}");

    // Rolling back c1 restores the file as it was before it.
    let o = ex.execute(&cmd("r1", "app", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(read(&dest), "workers = 1");
    assert_eq!(read(&dir.path().join("app.conf.loaded")), "workers = 1", "the restored file was reloaded");

    // Only `keep` backups stay.
    for i in 0..4 {
        let id = format!("k{i}");
        let o = ex
            .execute(&cmd(&id, "app", "config", &[("template", "app.conf"), ("version", &id), ("var.workers", "2")]))
            .await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
    }
    let backups = std::fs::read_dir(state.path().join("config/app/app.conf")).expect("backups").count();
    assert_eq!(backups, 2);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("augur-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[tokio::test]
async fn config_with_a_failing_health_check_is_rolled_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("app.conf");
    std::fs::write(&dest, "workers = 1\n").expect("original");
    let mut ex = executor(state.path(), Path::new("/nonexistent"), &[app(dir.path(), &["false"])]);
    let o = ex
        .execute(&cmd("c1", "app", "config", &[("template", "app.conf"), ("version", "v2"), ("var.workers", "8")]))
        .await;
    assert_eq!(o.status, Status::RolledBack, "{o:?}");
    assert_eq!(read(&dest), "workers = 1");
    assert_eq!(read(&dir.path().join("app.conf.loaded")), "workers = 1", "the previous file was reloaded");
}
