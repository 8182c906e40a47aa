//! The packaging in deploy/: the systemd unit passes `systemd-analyze
//! verify` (where the tool is installed), and names what the server reads.

use std::path::Path;

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rollcall.service");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = unit();
    for setting in [
        "User=rollcall",
        "StateDirectory=rollcall",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Environment=ROLLCALL_TLS_CERT=",
        "Environment=ROLLCALL_TLS_KEY=",
    ] {
        assert!(unit.lines().any(|line| line.starts_with(setting)), "{setting} missing");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: the unit's syntax is not verified here");
        return;
    };
    // Verified with ExecStart pointing at the binary just built (verify
    // checks that the command exists).
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("rollcall.service");
    std::fs::write(&here, unit.replace("/usr/local/bin/rollcall", env!("CARGO_BIN_EXE_rollcall")))
        .unwrap();
    let output = std::process::Command::new(analyze).arg("verify").arg(&here).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// The environment variables the unit and the Dockerfile set are ones
/// `rollcall serve` reads.
#[test]
fn the_packaged_environment_is_what_serve_reads() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
            .unwrap();
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let text = format!("{}\n{dockerfile}", unit());
    let mut names: Vec<&str> = text
        .split(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
        .filter(|word| word.starts_with("ROLLCALL_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        // ROLLCALL_DB and ROLLCALL_LOG_FORMAT are global options.
        let global = ["ROLLCALL_DB", "ROLLCALL_LOG_FORMAT"].contains(&name);
        assert!(global || help.contains(name), "serve does not read {name}");
    }
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|file| file.is_file()).ok_or(())
}
