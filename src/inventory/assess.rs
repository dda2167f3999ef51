//! Pure: hooks as listed, who manages them and what the probe saw -> each hook's health,
//! flags and the command that fixes each flag, and the totals.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

use super::model::{Finding, Flag, Hook, Listed, Manager, PlaceName, PlaceReport, Totals};
use crate::api::{DeliveryHealth, Flavor, Reason};
use crate::bitbucket::Place;
use crate::health::classify::{self, ProbeOutcome, Verdict};
use crate::identity::PlaceKey;

/// One place and what listing it gave.
pub struct Read {
    pub place: Place,
    pub hooks: Result<Vec<Listed>, String>,
}

/// The commands and pages the fixes name; they depend on the server and the flags the
/// run was given.
pub trait Commands {
    /// Where a person sees the place's hooks.
    fn page(&self, place: &Place) -> String;
    /// A command that deletes hook `id`.
    fn delete(&self, place: &Place, id: &str) -> String;
    /// A command that prints Webhook manifests adopting the place's hooks.
    fn adopt(&self, place: &Place) -> String;
}

/// Who manages which hook: (place, hook id) -> the object. None: the cluster was not read.
pub type Managers = HashMap<(PlaceKey, String), Manager>;

/// What the assessment needs besides the listings.
pub struct Context<'a> {
    pub flavor: Flavor,
    pub managers: Option<&'a Managers>,
    /// Probe outcomes by URL (each URL is probed once).
    pub probes: &'a HashMap<String, ProbeOutcome>,
    pub now: Timestamp,
    pub commands: &'a dyn Commands,
}

/// The places, every hook assessed, and the totals.
pub fn assess(ctx: &Context<'_>, reads: &[Read]) -> (Vec<PlaceReport>, Vec<Hook>, Totals) {
    let above = parents(reads);
    let mut places = Vec::new();
    let mut hooks = Vec::new();
    for read in reads {
        let page = ctx.commands.page(&read.place);
        let listed = match &read.hooks {
            Ok(listed) => listed,
            Err(error) => {
                places.push(PlaceReport {
                    place: PlaceName::of(&read.place),
                    hooks: None,
                    error: Some(error.clone()),
                    page,
                });
                continue;
            }
        };
        places.push(PlaceReport {
            place: PlaceName::of(&read.place),
            hooks: Some(listed.len() as u64),
            error: None,
            page: page.clone(),
        });
        let parent =
            parent_of(ctx.flavor, &read.place).and_then(|p| above.get(&PlaceKey::from(&p)));
        for hook in listed {
            let manager = ctx
                .managers
                .and_then(|m| m.get(&(PlaceKey::from(&read.place), hook.id.clone())))
                .cloned();
            let (verdicts, probe) = health(ctx, hook);
            let mut flags = Vec::new();
            let about = About {
                ctx,
                place: &read.place,
                hook,
                manager: manager.as_ref(),
                page: &page,
            };
            about.ownership(&mut flags);
            about.duplicates(listed, &mut flags);
            if let Some((parent_place, parent_hooks)) = parent {
                about.inherited(parent_place, parent_hooks, &mut flags);
            }
            about.settings(&mut flags);
            for verdict in [&verdicts.statistics, &verdicts.probe]
                .into_iter()
                .flatten()
            {
                about.deliveries(verdict, &mut flags);
            }
            hooks.push(Hook {
                place: PlaceName::of(&read.place),
                listed: hook.clone(),
                managed_by: manager,
                health: verdicts.overall.health,
                health_message: verdicts.overall.message,
                probe,
                flags,
                page: page.clone(),
            });
        }
    }
    let totals = totals(&places, &hooks);
    (places, hooks, totals)
}

/// The listed workspaces and projects, by key.
fn parents(reads: &[Read]) -> HashMap<PlaceKey, (&Place, &Vec<Listed>)> {
    reads
        .iter()
        .filter(|r| !matches!(r.place, Place::Repository(_)))
        .filter_map(|r| {
            let hooks = r.hooks.as_ref().ok()?;
            Some((PlaceKey::from(&r.place), (&r.place, hooks)))
        })
        .collect()
}

/// The place above a repository whose hooks also fire for it.
fn parent_of(flavor: Flavor, place: &Place) -> Option<Place> {
    match (place, flavor) {
        (Place::Repository(r), Flavor::Cloud) => Some(Place::Workspace(r.owner.clone())),
        (Place::Repository(r), _) => Some(Place::Project(r.owner.clone())),
        _ => None,
    }
}

/// The operator's own verdicts: from the statistics, from the probe, and the two together.
struct Verdicts {
    statistics: Option<Verdict>,
    probe: Option<Verdict>,
    overall: Verdict,
}

fn health(ctx: &Context<'_>, hook: &Listed) -> (Verdicts, Option<super::model::ProbeReport>) {
    let statistics = hook
        .statistics
        .as_ref()
        .map(|s| classify::from_statistics(&s.stats()));
    let outcome = ctx.probes.get(&hook.url);
    let probe = outcome.map(|p| classify::from_probe(p, ctx.now));
    let overall = match (&statistics, &probe) {
        (Some(s), Some(p)) => classify::worse(s.clone(), p.clone()),
        (Some(s), None) => s.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => classify::not_reported(ctx.flavor.events().name()),
    };
    let verdicts = Verdicts {
        statistics,
        probe,
        overall,
    };
    (verdicts, outcome.map(report))
}

fn report(outcome: &ProbeOutcome) -> super::model::ProbeReport {
    let (name, status, expires, message) = match outcome {
        ProbeOutcome::Refused(why) => ("Refused", None, None, why.clone()),
        ProbeOutcome::Unreachable(why) => ("Unreachable", None, None, why.clone()),
        ProbeOutcome::CertificateRejected(why) => ("CertificateRejected", None, None, why.clone()),
        ProbeOutcome::Answered {
            status,
            latency,
            certificate_expires,
        } => (
            "Answered",
            Some(*status),
            certificate_expires.map(|t| t.to_string()),
            format!("HTTP {status} in {} ms", latency.as_millis()),
        ),
    };
    super::model::ProbeReport {
        outcome: name.to_owned(),
        status,
        certificate_expires: expires,
        message,
    }
}

/// One hook being assessed.
struct About<'a> {
    ctx: &'a Context<'a>,
    place: &'a Place,
    hook: &'a Listed,
    manager: Option<&'a Manager>,
    page: &'a str,
}

impl About<'_> {
    fn flag(&self, flag: Flag, message: String, fix: String) -> Finding {
        Finding { flag, message, fix }
    }

    fn delete(&self) -> String {
        self.ctx.commands.delete(self.place, &self.hook.id)
    }

    /// The fix for a managed hook is in its manifest, never in Bitbucket (the operator
    /// would undo it).
    fn edit(&self, m: &Manager, what: &str) -> String {
        let object = match m.kind.as_str() {
            "WebhookSet" => "webhookset",
            _ => "webhook",
        };
        format!(
            "change {what} in the manifest of {} {}/{} (kubectl -n {} edit {object} {})",
            m.kind, m.namespace, m.name, m.namespace, m.name
        )
    }

    fn ownership(&self, flags: &mut Vec<Finding>) {
        if self.ctx.managers.is_some() && self.manager.is_none() {
            flags.push(self.flag(
                Flag::Unmanaged,
                "no Webhook in the cluster manages this hook".to_owned(),
                format!(
                    "adopt it: {} | kubectl apply -n NAMESPACE -f - (or delete it: {})",
                    self.ctx.commands.adopt(self.place),
                    self.delete()
                ),
            ));
        }
    }

    /// Of the place's hooks with one URL, one is kept (the first a Webhook manages, else
    /// the first listed); every other copy is flagged.
    fn duplicates(&self, all: &[Listed], flags: &mut Vec<Finding>) {
        let managed = |h: &Listed| {
            self.ctx
                .managers
                .is_some_and(|m| m.contains_key(&(PlaceKey::from(self.place), h.id.clone())))
        };
        let copies: Vec<&Listed> = all.iter().filter(|h| h.url == self.hook.url).collect();
        let Some(kept) = copies
            .iter()
            .find(|h| managed(h))
            .or_else(|| copies.first())
        else {
            return;
        };
        if kept.id == self.hook.id {
            return;
        }
        flags.push(self.flag(
            Flag::DuplicateUrl,
            format!(
                "hook {} on this {} has the same URL: each event is delivered twice",
                kept.id,
                kind(self.place)
            ),
            match self.manager {
                Some(m) => self.edit(m, "spec.url"),
                None => format!("delete this copy: {}", self.delete()),
            },
        ));
    }

    fn inherited(&self, parent: &Place, parent_hooks: &[Listed], flags: &mut Vec<Finding>) {
        let Some(above) = parent_hooks.iter().find(|h| h.url == self.hook.url) else {
            return;
        };
        flags.push(self.flag(
            Flag::InheritedDuplicate,
            format!(
                "{parent}'s hook {} has the same URL and fires for this repository too: each event it shares is delivered twice",
                above.id
            ),
            match self.manager {
                Some(m) => format!(
                    "delete {} {}/{} (kubectl -n {} delete {} {}); the {} hook delivers already",
                    m.kind,
                    m.namespace,
                    m.name,
                    m.namespace,
                    m.kind.to_ascii_lowercase(),
                    m.name,
                    kind(parent)
                ),
                None => format!("delete the repository's copy: {}", self.delete()),
            },
        ));
    }

    fn settings(&self, flags: &mut Vec<Finding>) {
        if !self.hook.active {
            flags.push(self.flag(
                Flag::Inactive,
                "the hook is switched off: Bitbucket delivers nothing".to_owned(),
                match self.manager {
                    Some(m) => self.edit(m, "spec.active"),
                    None => format!(
                        "switch it on at {} or delete it: {}",
                        self.page,
                        self.delete()
                    ),
                },
            ));
        }
        let backend = self.ctx.flavor.events();
        let unknown: Vec<String> = self
            .hook
            .events
            .iter()
            .filter_map(|e| bitbucket_events::check_event(backend, e).message(e, backend))
            .collect();
        if !unknown.is_empty() {
            flags.push(self.flag(
                Flag::UnknownEvents,
                unknown.join("; "),
                match self.manager {
                    Some(m) => self.edit(m, "spec.events"),
                    None => format!("edit its events at {}", self.page),
                },
            ));
        }
    }

    fn deliveries(&self, verdict: &Verdict, flags: &mut Vec<Finding>) {
        let flag = match verdict.reason {
            Reason::DeliveriesFailing => Flag::Failing,
            Reason::NoDeliveries if self.hook.active => Flag::NeverDelivered,
            Reason::EndpointUnreachable | Reason::EndpointFailing | Reason::CertificateRejected => {
                Flag::Unreachable
            }
            Reason::CertificateExpiring => Flag::CertificateExpiring,
            _ => return,
        };
        let fix = match (flag, self.manager) {
            (Flag::CertificateExpiring, _) => {
                format!("renew the certificate of {}", host(&self.hook.url))
            }
            (Flag::NeverDelivered, Some(m)) => {
                self.edit(m, "spec.events (nothing it subscribes to happened)")
            }
            (Flag::NeverDelivered, None) => format!(
                "check that its events ({}) still happen here, or delete it if nobody needs it: {}",
                self.hook.events.join(", "),
                self.delete()
            ),
            (_, Some(m)) => format!(
                "fix the endpoint or its URL; the deliveries: kubectl -n {} describe webhook {}",
                m.namespace, m.webhook
            ),
            (_, None) => format!(
                "fix the endpoint, or delete the hook if nobody needs it: {}",
                self.delete()
            ),
        };
        flags.push(self.flag(flag, verdict.message.clone(), fix));
    }
}

fn kind(place: &Place) -> &'static str {
    match place {
        Place::Repository(_) => "repository",
        Place::Project(_) => "project",
        Place::Workspace(_) => "workspace",
    }
}

fn host(url: &str) -> &str {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .unwrap_or(url)
}

fn totals(places: &[PlaceReport], hooks: &[Hook]) -> Totals {
    let mut by_health = BTreeMap::new();
    for health in [
        DeliveryHealth::Healthy,
        DeliveryHealth::Degraded,
        DeliveryHealth::Failing,
        DeliveryHealth::Unknown,
    ] {
        by_health.insert(format!("{health:?}"), 0);
    }
    let mut by_flag: BTreeMap<String, u64> =
        Flag::ALL.iter().map(|f| (f.name().to_owned(), 0)).collect();
    for hook in hooks {
        *by_health.entry(format!("{:?}", hook.health)).or_default() += 1;
        let mut seen: Vec<Flag> = hook.flags.iter().map(|f| f.flag).collect();
        seen.sort();
        seen.dedup();
        for flag in seen {
            *by_flag.entry(flag.name().to_owned()).or_default() += 1;
        }
    }
    Totals {
        hooks: hooks.len() as u64,
        places: places.len() as u64,
        unreadable_places: places.iter().filter(|p| p.error.is_some()).count() as u64,
        managed: hooks.iter().filter(|h| h.managed_by.is_some()).count() as u64,
        flagged: hooks.iter().filter(|h| !h.flags.is_empty()).count() as u64,
        by_health,
        by_flag,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::model::Statistics;
    use super::*;
    use crate::bitbucket::{DeliveryStats, Invocation, RepoRef};

    struct Fixed;

    impl Commands for Fixed {
        fn page(&self, place: &Place) -> String {
            format!("https://bb/{place}")
        }
        fn delete(&self, _place: &Place, id: &str) -> String {
            format!("delete {id}")
        }
        fn adopt(&self, place: &Place) -> String {
            format!("export {place}")
        }
    }

    fn listed(id: &str, url: &str) -> Listed {
        Listed {
            id: id.into(),
            title: format!("hook {id}"),
            url: url.into(),
            events: vec!["repo:refs_changed".into()],
            active: true,
            signed: false,
            skip_cert_verification: false,
            statistics: Some(Statistics::of(&delivered("SUCCESS"))),
        }
    }

    fn delivered(outcome: &str) -> DeliveryStats {
        let call = Invocation {
            at: Timestamp::from_second(1_700_000_000).expect("time"),
            event: "repo:refs_changed".into(),
            outcome: outcome.into(),
            description: "answer".into(),
        };
        let success = outcome == "SUCCESS";
        DeliveryStats {
            successes: u64::from(success),
            failures: u64::from(!success),
            last_success: success.then(|| call.clone()),
            last_failure: (!success).then_some(call),
            ..DeliveryStats::default()
        }
    }

    fn flags_of(hooks: &[Hook], id: &str) -> Vec<Flag> {
        hooks
            .iter()
            .find(|h| h.listed.id == id)
            .map(|h| h.flags.iter().map(|f| f.flag).collect())
            .unwrap_or_default()
    }

    fn manager(name: &str) -> Manager {
        Manager {
            kind: "Webhook".into(),
            namespace: "ci".into(),
            name: name.into(),
            webhook: name.into(),
        }
    }

    /// One project and a repository with a hook for each flag (ids say which).
    fn reads() -> Vec<Read> {
        let repo = Place::Repository(RepoRef::parse("PLAT/api").expect("repo"));
        let mut failing = listed("failing", "https://ci.example.com/failing");
        failing.statistics = Some(Statistics::of(&delivered("FAILURE")));
        let mut silent = listed("never", "https://ci.example.com/never");
        silent.statistics = Some(Statistics::default());
        let mut off = listed("inactive", "https://ci.example.com/off");
        off.active = false;
        let mut old = listed("events", "https://ci.example.com/events");
        old.events = vec!["repo:push".into()];
        vec![
            Read {
                place: Place::Project("PLAT".into()),
                hooks: Ok(vec![listed("above", "https://ci.example.com/all")]),
            },
            Read {
                place: repo,
                hooks: Ok(vec![
                    listed("managed", "https://ci.example.com/a"),
                    listed("copy", "https://ci.example.com/a"),
                    listed("inherited", "https://ci.example.com/all"),
                    failing,
                    silent,
                    off,
                    old,
                    listed("down", "https://down.example.com/"),
                    listed("expiring", "https://old-cert.example.com/"),
                ]),
            },
            Read {
                place: Place::Repository(RepoRef::parse("PLAT/secret").expect("repo")),
                hooks: Err("403 Forbidden".into()),
            },
        ]
    }

    #[test]
    fn each_hook_gets_its_flags_and_a_fix() {
        let now = Timestamp::from_second(1_700_000_000).expect("time");
        let repo = Place::Repository(RepoRef::parse("plat/API").expect("repo"));
        let mut managers = Managers::new();
        managers.insert((PlaceKey::from(&repo), "managed".into()), manager("api"));
        let probes: HashMap<String, ProbeOutcome> = [
            (
                // A healthy endpoint does not hide that Bitbucket never delivered.
                "https://ci.example.com/never".to_owned(),
                ProbeOutcome::Answered {
                    status: 200,
                    latency: Duration::from_millis(5),
                    certificate_expires: None,
                },
            ),
            (
                "https://down.example.com/".to_owned(),
                ProbeOutcome::Unreachable("connection refused".into()),
            ),
            (
                "https://old-cert.example.com/".to_owned(),
                ProbeOutcome::Answered {
                    status: 200,
                    latency: Duration::from_millis(5),
                    certificate_expires: Some(now + Duration::from_secs(3 * 24 * 3600)),
                },
            ),
        ]
        .into();
        let ctx = Context {
            flavor: Flavor::DataCenter,
            managers: Some(&managers),
            probes: &probes,
            now,
            commands: &Fixed,
        };
        let (places, hooks, totals) = assess(&ctx, &reads());
        use Flag::*;
        assert_eq!(flags_of(&hooks, "managed"), []);
        assert_eq!(flags_of(&hooks, "copy"), [Unmanaged, DuplicateUrl]);
        assert_eq!(
            flags_of(&hooks, "inherited"),
            [Unmanaged, InheritedDuplicate]
        );
        assert_eq!(flags_of(&hooks, "above"), [Unmanaged]);
        assert_eq!(flags_of(&hooks, "failing"), [Unmanaged, Failing]);
        assert_eq!(flags_of(&hooks, "never"), [Unmanaged, NeverDelivered]);
        assert_eq!(flags_of(&hooks, "inactive"), [Unmanaged, Inactive]);
        assert_eq!(flags_of(&hooks, "events"), [Unmanaged, UnknownEvents]);
        assert_eq!(flags_of(&hooks, "down"), [Unmanaged, Unreachable]);
        assert_eq!(
            flags_of(&hooks, "expiring"),
            [Unmanaged, CertificateExpiring]
        );
        let copy = hooks.iter().find(|h| h.listed.id == "copy").expect("copy");
        assert_eq!(copy.flags[1].fix, "delete this copy: delete copy");
        assert!(copy.flags[1].message.contains("hook managed"));
        assert!(copy.flags[0].fix.contains("export PLAT/api"));
        let managed = hooks
            .iter()
            .find(|h| h.listed.id == "managed")
            .expect("hook");
        assert_eq!(managed.managed_by, Some(manager("api")));
        assert_eq!(managed.health, DeliveryHealth::Healthy);
        assert_eq!(totals.hooks, 10);
        assert_eq!((totals.places, totals.unreadable_places), (3, 1));
        assert_eq!((totals.managed, totals.flagged), (1, 9));
        assert_eq!(totals.by_flag["Unmanaged"], 9);
        assert_eq!(totals.by_flag["DuplicateUrl"], 1);
        assert_eq!(
            totals.by_health["Failing"], 2,
            "the failing and the unreachable"
        );
        assert_eq!(places[2].error.as_deref(), Some("403 Forbidden"));
    }

    #[test]
    fn without_the_cluster_nothing_is_unmanaged_and_managed_hooks_are_edited_in_git() {
        let now = Timestamp::from_second(1_700_000_000).expect("time");
        let probes = HashMap::new();
        let ctx = Context {
            flavor: Flavor::DataCenter,
            managers: None,
            probes: &probes,
            now,
            commands: &Fixed,
        };
        let (_, hooks, totals) = assess(&ctx, &reads());
        assert!(hooks.iter().all(|h| h.managed_by.is_none()));
        assert_eq!(totals.by_flag["Unmanaged"], 0);
        assert_eq!(flags_of(&hooks, "copy"), [Flag::DuplicateUrl]);
        assert_eq!(flags_of(&hooks, "down"), [], "not probed");

        let repo = Place::Repository(RepoRef::parse("PLAT/api").expect("repo"));
        let mut managers = Managers::new();
        managers.insert((PlaceKey::from(&repo), "inactive".into()), manager("off"));
        let ctx = Context {
            managers: Some(&managers),
            ..ctx
        };
        let (_, hooks, _) = assess(&ctx, &reads());
        let off = hooks
            .iter()
            .find(|h| h.listed.id == "inactive")
            .expect("hook");
        assert_eq!(
            off.flags[0].fix,
            "change spec.active in the manifest of Webhook ci/off (kubectl -n ci edit webhook off)"
        );
    }
}
