//! Spawning and stopping the control-plane processes.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::{ControlPlane, Error, Result, err};

/// How long the processes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed when the spawning thread's process ends, however it ends.
    DiesWithThisProcess,
    /// In a session of their own, outliving this process (`make cluster`).
    Detached,
}

/// Starts `cmd` with its output in `<dir>/<name>.log`.
pub(crate) fn spawn(mut cmd: Command, dir: &Path, name: &str, lifetime: Lifetime) -> Result<Child> {
    let log_path = dir.join(format!("{name}.log"));
    let log = File::create(&log_path)
        .map_err(|e| err(format!("cannot create {}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| err(format!("cannot reopen {}: {e}", log_path.display())))?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    match lifetime {
        Lifetime::DiesWithThisProcess => {
            // SAFETY: prctl is async-signal-safe and touches no memory of ours.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Lifetime::Detached => {
            cmd.process_group(0);
        }
    }
    cmd.spawn().map_err(|e| {
        err(format!(
            "cannot start {}: {e}",
            cmd.get_program().to_string_lossy()
        ))
    })
}

/// Kills and reaps every child.
pub(crate) fn kill_all(children: &mut Vec<Child>) {
    for child in children.iter_mut() {
        let _ = child.kill();
    }
    for mut child in children.drain(..) {
        let _ = child.wait();
    }
}

/// Sends SIGTERM (or SIGKILL when `kill`) to `pid`; true when the process existed.
pub fn terminate(pid: u32, kill: bool) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    let signal = if kill { libc::SIGKILL } else { libc::SIGTERM };
    // SAFETY: plain syscall with integer arguments.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Whether a process with this id is running. A zombie (exited, not yet reaped by
/// whoever inherited it) counts as stopped.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

static AT_EXIT: OnceLock<&'static ControlPlane> = OnceLock::new();

extern "C" fn stop_registered() {
    if let Some(plane) = AT_EXIT.get() {
        plane.stop();
        let _ = std::fs::remove_dir_all(plane.dir());
    }
}

/// Stops the control plane and removes its directory when the process exits normally
/// (the test harness exits this way also after failed tests).
pub(crate) fn stop_at_exit(plane: &'static ControlPlane) {
    if AT_EXIT.set(plane).is_ok() {
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(stop_registered);
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        err(e.to_string())
    }
}
