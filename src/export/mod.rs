//! `bitbucket-webhook-operator export`: reads existing hooks and prints Webhook manifests
//! that adopt them (same ids, no write). The listing is I/O here; what the manifests say
//! is decided in the pure [`manifest`] module.

pub mod manifest;
pub mod migrate;

use std::sync::Arc;
use std::time::Duration;

pub use manifest::{Export, Target};
pub use migrate::Migration;

use crate::api::Flavor;
use crate::bitbucket::{
    self, Budget, ConnectionConfig, Credentials, Error, Place, RemoteHook, RepoRef, RetryPolicy,
    TlsOptions, WebhookBackend,
};

/// Which hooks to read.
#[derive(Clone, Debug)]
pub enum Source {
    /// These repositories' hooks.
    Repositories(Vec<RepoRef>),
    /// Every repository of a Cloud workspace (narrowed to a project by `project`) or a
    /// Data Center project, and the hooks of the workspace or project itself (not when
    /// narrowed: a workspace's hooks belong to all its projects).
    Owner {
        owner: String,
        project: Option<String>,
    },
}

/// Which Bitbucket the command-line tools (`export`, `inventory`) read, as whom, and how
/// fast.
pub struct Server {
    pub flavor: Flavor,
    /// None: Cloud's public API.
    pub base_url: Option<String>,
    pub credentials: Credentials,
    pub tls: TlsOptions,
    pub requests_per_hour: u32,
}

impl Server {
    /// A client paced by `requests_per_hour`, and the budget it takes its requests from.
    pub fn connect(&self) -> Result<(Arc<dyn WebhookBackend>, Arc<Budget>), String> {
        let budget = Arc::new(Budget::per_hour(self.requests_per_hour));
        let backend = bitbucket::connect(ConnectionConfig {
            flavor: self.flavor,
            base_url: self.base_url.clone(),
            credentials: self.credentials.clone(),
            tls: self.tls.clone(),
            budget: budget.clone(),
            // The commands wait out the budget themselves (`patiently`), saying so.
            retry: RetryPolicy {
                queue_patience: Duration::ZERO,
                ..RetryPolicy::default()
            },
            observer: None,
        })
        .map_err(|e| e.to_string())?;
        Ok((backend, budget))
    }
}

/// Everything `export` needs.
pub struct Request {
    pub target: Target,
    pub server: Server,
    pub source: Source,
    /// Print Cloud manifests for these Data Center or Post Webhooks hooks.
    pub migration: Option<Migration>,
}

/// The manifests and notes, and whether every place could be read.
pub struct Outcome {
    pub export: Export,
    pub complete: bool,
}

/// Lists the hooks and builds the manifests; `progress` hears one line per step.
pub async fn run(request: Request, progress: &mut dyn FnMut(String)) -> Result<Outcome, String> {
    let flavor = request.server.flavor;
    let (backend, _) = request.server.connect()?;
    let mut notes = Vec::new();
    let places = match &request.source {
        Source::Repositories(repos) => repos.iter().cloned().map(Place::Repository).collect(),
        Source::Owner { owner, project } => {
            progress(format!("listing the repositories of {owner}"));
            let repos = patiently(progress, || {
                backend.list_repositories(owner, project.as_deref())
            })
            .await
            .map_err(|e| format!("cannot list the repositories of {owner}: {e}"))?;
            progress(format!("{} repositories", repos.len()));
            let mut places: Vec<Place> = repos.into_iter().map(Place::Repository).collect();
            match (flavor, project) {
                (Flavor::Cloud, None) => places.push(Place::Workspace(owner.clone())),
                (Flavor::Cloud, Some(_)) => {}
                (_, _) => places.push(Place::Project(owner.clone())),
            }
            places
        }
    };
    let mut listed: Vec<(Place, Vec<RemoteHook>)> = Vec::new();
    let mut complete = true;
    let total = places.len();
    for (i, place) in places.into_iter().enumerate() {
        match patiently(progress, || backend.list_hooks(&place)).await {
            Ok(hooks) => {
                progress(format!(
                    "[{}/{total}] {place}: {} hooks",
                    i + 1,
                    hooks.len()
                ));
                listed.push((place, hooks));
            }
            // The level above the repositories is a bonus: a credential that may not read
            // it still exports every repository.
            Err(e) if !matches!(place, Place::Repository(_)) => {
                notes.push(format!("{place}: its own hooks were not read: {e}"));
            }
            Err(e) => {
                complete = false;
                notes.push(format!("{place}: cannot list its hooks: {e}"));
            }
        }
    }
    let mut export = match &request.migration {
        Some(migration) => {
            let cloud = Target {
                flavor: Flavor::Cloud,
                ..request.target.clone()
            };
            migration.export(&cloud, &listed)
        }
        None => manifest::export(&request.target, &listed),
    };
    notes.append(&mut export.notes);
    export.notes = notes;
    Ok(Outcome { export, complete })
}

/// Calls `f` until it is not rate limited, waiting as long as the budget or Bitbucket asks.
pub(crate) async fn patiently<T, F, Fut>(
    progress: &mut dyn FnMut(String),
    mut f: F,
) -> bitbucket::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bitbucket::Result<T>>,
{
    loop {
        match f().await {
            Err(Error::RateLimited { retry_after, local }) => {
                let wait = retry_after.unwrap_or(Duration::from_secs(60));
                if !local || wait > Duration::from_secs(5) {
                    progress(format!(
                        "rate limited ({}): waiting {}s",
                        if local {
                            "the --requests-per-hour budget"
                        } else {
                            "Bitbucket answered 429"
                        },
                        wait.as_secs().max(1)
                    ));
                }
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}
