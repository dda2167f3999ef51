//! `testenv up DIR` starts etcd + kube-apiserver in the background with their state in
//! DIR and prints how to use them; `testenv down DIR` stops them and removes DIR.
//! `make cluster` and `make cluster-down` call it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use testenv::{ControlPlane, Lifetime, alive, bin_dir, terminate};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, dir] if cmd == "up" => up(Path::new(dir)),
        [cmd, dir] if cmd == "down" => down(Path::new(dir)),
        _ => Err("usage: testenv up DIR | testenv down DIR".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("testenv: {message}");
            ExitCode::FAILURE
        }
    }
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("pids")
}

fn read_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(pid_file(dir))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn up(dir: &Path) -> Result<(), String> {
    if read_pids(dir).into_iter().any(alive) {
        return Err(format!(
            "a cluster is already running from {}; stop it with `make cluster-down`",
            dir.display()
        ));
    }
    let _ = std::fs::remove_dir_all(dir);
    let started = Instant::now();
    let plane = ControlPlane::start(dir, Lifetime::Detached).map_err(|e| e.to_string())?;
    let pids: Vec<String> = plane.pids().iter().map(u32::to_string).collect();
    std::fs::write(pid_file(plane.dir()), pids.join(" "))
        .map_err(|e| format!("cannot record the process ids: {e}"))?;
    let bins = bin_dir().map_err(|e| e.to_string())?;
    println!(
        "etcd and kube-apiserver {} are running (ready in {:.1}s, state in {}).",
        plane.server(),
        started.elapsed().as_secs_f64(),
        plane.dir().display()
    );
    println!("Use them with:");
    println!("  export KUBECONFIG={}", plane.kubeconfig().display());
    println!(
        "  export PATH={}:$PATH   # a kubectl built for this apiserver",
        bins.display()
    );
    println!("Stop them with `make cluster-down`.");
    Ok(())
}

fn down(dir: &Path) -> Result<(), String> {
    // The apiserver first: shutting it down while etcd is gone makes it wait for etcd.
    for pid in read_pids(dir).into_iter().rev() {
        stop(pid);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    println!("cluster stopped; removed {}", dir.display());
    Ok(())
}

/// SIGTERM, then SIGKILL after 10 seconds: the state is throwaway.
fn stop(pid: u32) {
    if !alive(pid) {
        return;
    }
    terminate(pid, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if Instant::now() > deadline {
            eprintln!("testenv: process {pid} ignored SIGTERM for 10s; killing it");
            terminate(pid, true);
            deadline_wait(pid);
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn deadline_wait(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}
