//! `bitbucket-webhook-operator inventory`: every hook of a workspace, project or whole
//! Data Center instance, who manages it, and what is wrong with it. Listing, probing and
//! reading the cluster are the I/O here; the verdicts are the pure [`assess`] module's,
//! the outputs [`table`] and [`html`]'s.

pub mod assess;
pub mod cluster;
pub mod html;
pub mod model;
pub mod resume;
pub mod table;

use std::collections::HashMap;
use std::path::PathBuf;

use futures::StreamExt;

use self::assess::{Commands, Context, Read};
use self::model::{Inventory, Listed, PlaceName};
use self::resume::State;
use crate::api::Flavor;
use crate::bitbucket::{Place, WebhookBackend};
use crate::export::{Server, Source, patiently};
use crate::health::classify::ProbeOutcome;
use crate::health::probe;
use crate::identity::ServerName;

/// What to read.
#[derive(Clone, Debug)]
pub enum Scope {
    /// As `export` reads: repositories, or a workspace or project with its own hooks.
    Of(Source),
    /// Every project of a Data Center instance the credential may view, each with its
    /// repositories.
    AllProjects,
}

/// Everything `inventory` needs.
pub struct Request {
    pub server: Server,
    pub scope: Scope,
    /// Keep what is listed here, and list only the rest when it already holds some.
    pub state: Option<PathBuf>,
    /// Ask this cluster which Webhook manages each hook.
    pub cluster: Option<kube::Client>,
    /// Probe every URL once; `Some(true)` lets the probe reach private addresses.
    pub probe: Option<bool>,
}

/// Reads, probes and assesses; `progress` hears one line per step.
pub async fn run(request: Request, progress: &mut dyn FnMut(String)) -> Result<Inventory, String> {
    let flavor = request.server.flavor;
    let (backend, budget) = request.server.connect()?;
    let server = ServerName::new(request.server.base_url.as_deref());
    let scope = describe(&request.scope, flavor);
    let run = format!("{flavor:?} {server} {scope}");
    // The cluster first: a kubeconfig that does not work fails before any request.
    let managers = match &request.cluster {
        Some(client) => {
            progress("reading the cluster's Webhooks".to_owned());
            let found = cluster::managers(client, flavor, &server).await?;
            progress(format!("{} hooks are managed by Webhooks", found.len()));
            Some(found)
        }
        None => None,
    };
    let mut state = match &request.state {
        Some(path) => State::load(path, &run)?,
        None => State::new(&run),
    };
    let save = |state: &State| match &request.state {
        Some(path) => state.save(path),
        None => Ok(()),
    };
    if state.places.is_none() {
        let places = places(backend.as_ref(), &request.scope, progress).await?;
        state.places = Some(places.iter().map(PlaceName::of).collect());
        save(&state)?;
    }
    let reads = list(backend.as_ref(), &mut state, &save, progress).await?;
    let probes = match request.probe {
        Some(allow_private) => probe_all(&reads, allow_private, progress).await,
        None => HashMap::new(),
    };
    let commands = Links {
        backend: backend.as_ref(),
        server: &request.server,
    };
    let ctx = Context {
        flavor,
        managers: managers.as_ref(),
        probes: &probes,
        now: jiff::Timestamp::now(),
        commands: &commands,
    };
    let (places, hooks, totals) = assess::assess(&ctx, &reads);
    Ok(Inventory {
        schema: model::SCHEMA.to_owned(),
        generated_at: ctx.now.to_string(),
        flavor: format!("{flavor:?}"),
        server: server.to_string(),
        scope,
        complete: totals.unreadable_places == 0,
        cluster_read: managers.is_some(),
        probed: request.probe.is_some(),
        requests: budget.taken(),
        requests_per_hour: request.server.requests_per_hour,
        totals,
        places,
        hooks,
    })
}

fn describe(scope: &Scope, flavor: Flavor) -> String {
    match scope {
        Scope::AllProjects => "every project".to_owned(),
        Scope::Of(Source::Repositories(repos)) => {
            let names: Vec<String> = repos.iter().map(ToString::to_string).collect();
            format!("repositories {}", names.join(", "))
        }
        Scope::Of(Source::Owner {
            owner,
            project: Some(project),
        }) => format!("workspace {owner} project {project}"),
        Scope::Of(Source::Owner { owner, .. }) => match flavor {
            Flavor::Cloud => format!("workspace {owner}"),
            _ => format!("project {owner}"),
        },
    }
}

/// The places to read: each repository, and above them their workspace or project.
async fn places(
    backend: &dyn WebhookBackend,
    scope: &Scope,
    progress: &mut dyn FnMut(String),
) -> Result<Vec<Place>, String> {
    let owners: Vec<(String, Option<String>)> = match scope {
        Scope::Of(Source::Repositories(repos)) => {
            return Ok(repos.iter().cloned().map(Place::Repository).collect());
        }
        Scope::Of(Source::Owner { owner, project }) => vec![(owner.clone(), project.clone())],
        Scope::AllProjects => {
            progress("listing the projects".to_owned());
            let keys = patiently(progress, || backend.list_projects())
                .await
                .map_err(|e| format!("cannot list the projects: {e}"))?;
            progress(format!("{} projects", keys.len()));
            keys.into_iter().map(|k| (k, None)).collect()
        }
    };
    let mut places = Vec::new();
    for (owner, project) in owners {
        progress(format!("listing the repositories of {owner}"));
        let repos = patiently(progress, || {
            backend.list_repositories(&owner, project.as_deref())
        })
        .await
        .map_err(|e| format!("cannot list the repositories of {owner}: {e}"))?;
        progress(format!("{owner}: {} repositories", repos.len()));
        // The level above first, so its hooks are known when its repositories' are.
        match (backend.flavor(), &project) {
            (Flavor::Cloud, None) => places.push(Place::Workspace(owner.clone())),
            (Flavor::Cloud, Some(_)) => {}
            _ => places.push(Place::Project(owner.clone())),
        }
        places.extend(repos.into_iter().map(Place::Repository));
    }
    Ok(places)
}

/// Lists every place the state does not hold yet, saving after each.
async fn list(
    backend: &dyn WebhookBackend,
    state: &mut State,
    save: &dyn Fn(&State) -> Result<(), String>,
    progress: &mut dyn FnMut(String),
) -> Result<Vec<Read>, String> {
    let names = state.places.clone().unwrap_or_default();
    let total = names.len();
    let mut reads = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Some(place) = name.place() else {
            return Err(format!("the state file names an unknown place {name:?}"));
        };
        if let Some(hooks) = state.hooks_of(name) {
            progress(format!(
                "[{}/{total}] {place}: {} hooks (from the state file)",
                i + 1,
                hooks.len()
            ));
            reads.push(Read {
                place,
                hooks: Ok(hooks.clone()),
            });
            continue;
        }
        let hooks = match patiently(progress, || backend.list_hooks(&place)).await {
            Ok(hooks) => {
                let hooks: Vec<Listed> = hooks.iter().map(Listed::of).collect();
                progress(format!(
                    "[{}/{total}] {place}: {} hooks",
                    i + 1,
                    hooks.len()
                ));
                state.listed.push((name.clone(), hooks.clone()));
                save(state)?;
                Ok(hooks)
            }
            Err(e) => {
                progress(format!("[{}/{total}] {place}: cannot list: {e}", i + 1));
                Err(e.to_string())
            }
        };
        reads.push(Read { place, hooks });
    }
    Ok(reads)
}

/// Probes each distinct URL once, eight at a time, as the operator's probe does (SSRF
/// guarded, unsigned: the inventory never reads a secret out).
async fn probe_all(
    reads: &[Read],
    allow_private: bool,
    progress: &mut dyn FnMut(String),
) -> HashMap<String, ProbeOutcome> {
    let mut urls: Vec<(String, bool)> = reads
        .iter()
        .filter_map(|r| r.hooks.as_ref().ok())
        .flatten()
        .map(|h| (h.url.clone(), h.skip_cert_verification))
        .collect();
    urls.sort();
    urls.dedup_by(|a, b| a.0 == b.0);
    progress(format!("probing {} endpoints", urls.len()));
    futures::stream::iter(urls)
        .map(|(url, skip)| async move {
            let (outcome, _) = probe::run(&probe::Probe {
                url: &url,
                secret: None,
                skip_cert_verification: skip,
                allow_private_targets: allow_private,
            })
            .await;
            (url, outcome)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// The fixes' commands for this server.
struct Links<'a> {
    backend: &'a dyn WebhookBackend,
    server: &'a Server,
}

impl Commands for Links<'_> {
    fn page(&self, place: &Place) -> String {
        self.backend.webhooks_page(place)
    }

    fn delete(&self, place: &Place, id: &str) -> String {
        match self.backend.hook_api_url(place, id) {
            Some(url) => {
                format!("curl -fsS -X DELETE -H \"Authorization: Bearer $BITBUCKET_TOKEN\" '{url}'")
            }
            None => format!("delete hook {id} at {}", self.page(place)),
        }
    }

    fn adopt(&self, place: &Place) -> String {
        let what = match place {
            Place::Repository(r) => format!("--repository {r}"),
            Place::Project(k) => format!("--project {k}"),
            Place::Workspace(w) => format!("--workspace {w}"),
        };
        let base = match &self.server.base_url {
            Some(url) => format!(" --base-url {url}"),
            None => String::new(),
        };
        format!(
            "bitbucket-webhook-operator export --flavor {:?}{base} {what}",
            self.server.flavor
        )
    }
}
