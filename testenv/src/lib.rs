//! A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager for
//! namespace deletion and garbage collection) for tests and `make cluster`.
//!
//! The binaries are built from Go modules by `hack/build-controlplane.sh` (`make envtest`);
//! nothing here downloads anything. Tests share one control plane per test binary
//! ([`shared`]) and give each test its own namespace ([`ControlPlane::namespace`]). The
//! processes die with the test process: they get `SIGKILL` when it exits normally (an
//! `atexit` hook) and, as a backstop, through `PR_SET_PDEATHSIG` when it is killed.

mod certs;
mod process;

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use process::{Lifetime, alive, terminate};

/// Environment variable naming the directory with `etcd`, `kube-apiserver` and `kubectl`.
pub const BIN_DIR_ENV: &str = "BBWO_CONTROLPLANE_DIR";

/// Why the control plane could not be started.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(message: impl Into<String>) -> Error {
    Error(message.into())
}

type Result<T> = std::result::Result<T, Error>;

/// Where the control-plane binaries are: `$BBWO_CONTROLPLANE_DIR`, else the `current`
/// link that `make envtest` keeps in its cache.
pub fn bin_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => cache_dir().join("controlplane").join("current"),
    };
    for name in [
        "etcd",
        "kube-apiserver",
        "kubectl",
        "kube-controller-manager",
    ] {
        if !dir.join(name).is_file() {
            return Err(err(format!(
                "the control-plane binary {name} is missing from {}: run `make envtest` \
                 (it builds etcd, kube-apiserver, kube-controller-manager and kubectl from Go \
                 modules) or set {BIN_DIR_ENV}",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BBWO_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("bitbucket-webhook-operator")
}

/// kube-apiserver's place among the children (etcd, kube-apiserver, controller-manager).
const APISERVER: usize = 1;

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    dir: PathBuf,
    bin_dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    children: Mutex<Vec<Child>>,
    namespaces: AtomicU32,
    /// kube-apiserver's arguments and the processes' lifetime, to restart it.
    apiserver_args: Vec<String>,
    lifetime: Lifetime,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager with their state in `dir`
    /// (created, must be empty)
    /// and waits until the apiserver is ready.
    pub fn start(dir: &Path, lifetime: Lifetime) -> Result<ControlPlane> {
        let bin_dir = bin_dir()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| err(format!("cannot resolve {}: {e}", dir.display())))?;
        let write = |name: &str, contents: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, contents)
                .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
            Ok(path)
        };

        let pki = certs::Pki::generate()?;
        write("ca.crt", &pki.ca_cert)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert)?;
        let serving_key = write("apiserver.key", &pki.serving_key)?;
        let sa_key = write("service-account.key", &pki.service_account_key)?;
        let sa_pub = write("service-account.pub", &pki.service_account_pub)?;
        let token = certs::random_token()?;
        let tokens = write(
            "tokens.csv",
            &format!("{token},admin,admin,\"system:masters\"\n"),
        )?;

        let [etcd_port, peer_port, api_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let server = format!("https://127.0.0.1:{api_port}");

        let mut etcd = Command::new(bin_dir.join("etcd"));
        etcd.args([
            "--name=testenv",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls={etcd_url}"),
            &format!("--advertise-client-urls={etcd_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=testenv={peer_url}"),
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]);
        let mut children = vec![process::spawn(etcd, &dir, "etcd", lifetime)?];

        let apiserver_args: Vec<String> = [
            &format!("--etcd-servers={etcd_url}"),
            &format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--cert-dir={}", dir.join("certs").display()),
            &format!("--tls-cert-file={}", serving_cert.display()),
            &format!("--tls-private-key-file={}", serving_key.display()),
            &format!("--token-auth-file={}", tokens.display()),
            &format!("--service-account-issuer={server}"),
            &format!("--service-account-key-file={}", sa_pub.display()),
            &format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            // A loopback advertise address is refused by the endpoint reconciler.
            "--endpoint-reconciler-type=none",
            // There is no controller-manager to create ServiceAccount tokens.
            "--disable-admission-plugins=ServiceAccount",
        ]
        .map(|a| a.to_owned())
        .into();
        let mut apiserver = Command::new(bin_dir.join("kube-apiserver"));
        apiserver.args(&apiserver_args);
        match process::spawn(apiserver, &dir, "kube-apiserver", lifetime) {
            Ok(child) => children.push(child),
            Err(e) => {
                process::kill_all(&mut children);
                return Err(e);
            }
        }

        let kubeconfig = write(
            "kubeconfig",
            &kubeconfig_yaml(&server, &pki.ca_cert, &token),
        )?;
        let plane = ControlPlane {
            dir,
            bin_dir,
            kubeconfig,
            server,
            children: Mutex::new(children),
            namespaces: AtomicU32::new(0),
            apiserver_args,
            lifetime,
        };
        if let Err(e) = plane.wait_ready(Duration::from_secs(90)) {
            plane.stop();
            return Err(e);
        }
        // Namespace deletion and ownerReference garbage collection, as a real cluster does;
        // aggregated ClusterRoles (the chart's aggregate-to-edit/view roles fill `edit`).
        let mut manager = Command::new(plane.bin_dir.join("kube-controller-manager"));
        manager.args([
            &format!("--kubeconfig={}", plane.kubeconfig.display()),
            "--controllers=namespace,garbagecollector,clusterrole-aggregation",
            "--leader-elect=false",
            "--secure-port=0",
            "--use-service-account-credentials=false",
            "--v=1",
        ]);
        match process::spawn(manager, &plane.dir, "kube-controller-manager", lifetime) {
            Ok(child) => {
                if let Ok(mut children) = plane.children.lock() {
                    children.push(child);
                }
            }
            Err(e) => {
                plane.stop();
                return Err(e);
            }
        }
        Ok(plane)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exited) = self.exited_child() {
                return Err(err(format!(
                    "{exited}; its log is in {}",
                    self.dir.display()
                )));
            }
            let out = self.kubectl(["get", "--raw", "/readyz"]).output();
            if matches!(&out, Ok(o) if o.status.success() && o.stdout.starts_with(b"ok")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let detail = match out {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(err(format!(
                    "kube-apiserver was not ready after {}s ({detail}); logs are in {}",
                    timeout.as_secs(),
                    self.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn exited_child(&self) -> Option<String> {
        let mut children = self.children.lock().ok()?;
        children.iter_mut().find_map(|c| match c.try_wait() {
            Ok(Some(status)) => Some(format!(
                "a control-plane process ({}) exited: {status}",
                c.id()
            )),
            _ => None,
        })
    }

    /// Kills kube-apiserver (SIGKILL), leaves the port closed for `down`, starts it again
    /// with the same arguments (etcd keeps the state) and waits until it is ready: what
    /// clients see when the API server restarts or fails over.
    pub fn restart_apiserver(&self, down: Duration) -> Result<()> {
        {
            let mut children = self
                .children
                .lock()
                .map_err(|_| err("the control plane's process list is poisoned"))?;
            let apiserver = children
                .get_mut(APISERVER)
                .ok_or_else(|| err("kube-apiserver is not running"))?;
            let _ = apiserver.kill();
            let _ = apiserver.wait();
        }
        std::thread::sleep(down);
        let mut cmd = Command::new(self.bin_dir.join("kube-apiserver"));
        cmd.args(&self.apiserver_args);
        let (dir, lifetime) = (self.dir.clone(), self.lifetime);
        // PR_SET_PDEATHSIG fires when the spawning thread ends: spawned from a thread
        // that stays, as the first one was.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("testenv-apiserver".into())
            .spawn(move || {
                let _ = tx.send(process::spawn(
                    cmd,
                    &dir,
                    "kube-apiserver-restarted",
                    lifetime,
                ));
                loop {
                    std::thread::park();
                }
            })
            .map_err(|e| err(format!("cannot start a thread: {e}")))?;
        let child = rx.recv().map_err(|_| err("the restart thread died"))??;
        if let Ok(mut children) = self.children.lock()
            && let Some(slot) = children.get_mut(APISERVER)
        {
            *slot = child;
        }
        self.wait_ready(Duration::from_secs(90))
    }

    /// Kills both processes (and waits for them). Idempotent.
    pub fn stop(&self) {
        if let Ok(mut children) = self.children.lock() {
            process::kill_all(&mut children);
        }
    }

    /// Process ids of etcd, kube-apiserver and kube-controller-manager, for
    /// `make cluster-down`.
    pub fn pids(&self) -> Vec<u32> {
        self.children
            .lock()
            .map(|c| c.iter().map(Child::id).collect())
            .unwrap_or_default()
    }

    /// The directory holding certificates, logs, etcd data and the kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig with cluster-admin rights, for kubectl and kube-rs.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver's https URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A `kubectl` built for this control plane, already pointed at it.
    pub fn kubectl<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd
    }

    /// Runs kubectl and returns its output, failing with its stderr when it fails.
    pub fn kubectl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.kubectl(args);
        let out = run(&mut cmd)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Runs kubectl with `input` on its stdin (for `apply -f -`) and returns its output
    /// whatever the exit status.
    pub fn kubectl_stdin<I, S>(&self, args: I, input: &str) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::Write;
        let mut child = self
            .kubectl(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run kubectl: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| err(format!("cannot write to kubectl: {e}")))?;
        }
        child
            .wait_with_output()
            .map_err(|e| err(format!("kubectl failed: {e}")))
    }

    /// A kube-rs client with cluster-admin rights. Make one per test: a client belongs to
    /// the tokio runtime it was made in.
    pub async fn client(&self) -> Result<kube::Client> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| err(format!("cannot read {}: {e}", self.kubeconfig.display())))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| err(format!("bad kubeconfig: {e}")))?;
        kube::Client::try_from(config).map_err(|e| err(format!("cannot build a client: {e}")))
    }

    /// Creates a fresh namespace for one test and returns its name. Namespaces are never
    /// deleted: without a controller-manager they would never finish terminating, and the
    /// control plane is thrown away with the test process anyway.
    pub fn namespace(&self, prefix: &str) -> Result<String> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let mut name: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        name = format!("{}-{n}", name.trim_matches('-'));
        self.kubectl_ok(["create", "namespace", &name])?;
        Ok(name)
    }
}

fn run(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .map_err(|e| err(format!("cannot run {:?}: {e}", cmd.get_program())))
}

fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // Hold all listeners until every port is known so the N ports differ.
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| err(format!("cannot find a free loopback port: {e}")))?;
    let mut ports = [0u16; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l
            .local_addr()
            .map_err(|e| err(format!("cannot read a port: {e}")))?
            .port();
    }
    Ok(ports)
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    use std::io::Write;
    let ca = base64(ca_pem.as_bytes());
    let mut out = Vec::new();
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\n\
         contexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: admin\n    \
         namespace: default\ncurrent-context: testenv\n"
    );
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(data: &[u8]) -> String {
    use k8s_openapi::ByteString;
    // ByteString serializes as standard base64; reuse it instead of another dependency.
    serde_json::to_value(ByteString(data.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

static SHARED: OnceLock<std::result::Result<&'static ControlPlane, String>> = OnceLock::new();

/// The control plane of this test binary, started on first use with the CRDs of
/// `crds_dir` installed and established. Panics with a sentence when it cannot start:
/// a test that needs it must fail, never skip.
pub fn shared(crds_dir: &Path) -> &'static ControlPlane {
    let result = SHARED.get_or_init(|| start_shared(crds_dir).map_err(|e| e.to_string()));
    match result {
        Ok(plane) => plane,
        Err(message) => panic!("the test control plane could not start: {message}"),
    }
}

fn start_shared(crds_dir: &Path) -> Result<&'static ControlPlane> {
    let dir = std::env::temp_dir().join(format!("bbwo-testenv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // PR_SET_PDEATHSIG fires when the *thread* that spawned a child ends, so the
    // processes are started from a thread that lives as long as the test process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("testenv-parent".into())
        .spawn(move || {
            let _ = tx.send(ControlPlane::start(&dir, Lifetime::DiesWithThisProcess));
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| err(format!("cannot start a thread: {e}")))?;
    let plane = rx
        .recv()
        .map_err(|_| err("the control-plane thread died while starting"))??;
    let plane: &'static ControlPlane = Box::leak(Box::new(plane));
    process::stop_at_exit(plane);
    plane.kubectl_ok([
        "apply".as_ref(),
        "--server-side".as_ref(),
        "-f".as_ref(),
        crds_dir.as_os_str(),
    ])?;
    plane.kubectl_ok([
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
    ])?;
    Ok(plane)
}
