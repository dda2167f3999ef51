//! The control plane dies with its test binary: after a panicking test (the `atexit`
//! path) and after `kill -9` (the `PR_SET_PDEATHSIG` path). Each case re-runs this test
//! binary as a child that starts the shared control plane, records its process ids and
//! then panics or waits to be killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "TESTENV_CLEANUP_CHILD";

fn crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

fn child(test: &str, pid_file: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args(["--exact", test, "--include-ignored", "--nocapture"])
        .env(CHILD_ENV, pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn wait_for_pids(pid_file: &Path) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(pid_file)
            && text.ends_with('\n')
        {
            return text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the child never started its control plane"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_all_stop(pids: &[u32]) {
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver and kube-controller-manager"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| testenv::alive(p)) {
        assert!(
            Instant::now() < deadline,
            "control-plane processes {pids:?} outlived their test binary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn child_start_and_record() {
    let pid_file = std::env::var_os(CHILD_ENV).expect("run by its parent test");
    let plane = testenv::shared(&crds());
    let pids: Vec<String> = plane.pids().iter().map(u32::to_string).collect();
    std::fs::write(pid_file, format!("{}\n", pids.join(" "))).expect("write pids");
}

#[test]
#[ignore = "a child of control_plane_stops_when_a_test_panics"]
fn child_that_panics() {
    child_start_and_record();
    panic!("deliberate panic in the middle of a test");
}

#[test]
#[ignore = "a child of control_plane_stops_when_the_test_binary_is_killed"]
fn child_that_waits_to_be_killed() {
    child_start_and_record();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn control_plane_stops_when_a_test_panics() {
    let dir = std::env::temp_dir().join(format!("testenv-cleanup-panic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pid_file = dir.join("pids");
    let status = child("child_that_panics", &pid_file)
        .status()
        .expect("child runs");
    assert!(!status.success(), "the child test must fail");
    assert_all_stop(&wait_for_pids(&pid_file));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn control_plane_stops_when_the_test_binary_is_killed() {
    let dir = std::env::temp_dir().join(format!("testenv-cleanup-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pid_file = dir.join("pids");
    let mut running = child("child_that_waits_to_be_killed", &pid_file)
        .spawn()
        .expect("child runs");
    let pids = wait_for_pids(&pid_file);
    assert!(
        pids.iter().all(|&p| testenv::alive(p)),
        "running before the kill"
    );
    running.kill().expect("SIGKILL the child");
    let _ = running.wait();
    assert_all_stop(&pids);
    let _ = std::fs::remove_dir_all(dir);
}
