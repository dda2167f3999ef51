//! The `--state` file: what an interrupted inventory already listed, so the next run
//! with the same file lists only the rest. Holds no secret (see [`Listed`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::model::{Listed, PlaceName};

const SCHEMA: &str = "bitbucket-webhook-operator/inventory-state/v1";

/// What the runs so far found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub schema: String,
    /// The run it belongs to: flavor, server and scope; another run refuses it.
    pub run: String,
    /// The places to read, once listed (None: not yet).
    pub places: Option<Vec<PlaceName>>,
    /// Each place read, with its hooks.
    pub listed: Vec<(PlaceName, Vec<Listed>)>,
}

impl State {
    pub fn new(run: &str) -> State {
        State {
            schema: SCHEMA.to_owned(),
            run: run.to_owned(),
            ..State::default()
        }
    }

    /// The state in `path` for this run, a new one when the file does not exist, or an
    /// error when it belongs to another run or cannot be read.
    pub fn load(path: &Path, run: &str) -> Result<State, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new(run)),
            Err(e) => return Err(format!("cannot read --state {}: {e}", path.display())),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| {
            format!(
                "--state {} is not an inventory state file: {e}",
                path.display()
            )
        })?;
        if state.schema != SCHEMA || state.run != run {
            return Err(format!(
                "--state {} belongs to another inventory ({}); give another file or delete it",
                path.display(),
                state.run
            ));
        }
        Ok(state)
    }

    /// Writes the state so that an interruption leaves the old file or the new one whole.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        let temporary = path.with_extension("partial");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|e| format!("cannot write --state {}: {e}", path.display()))
    }

    pub fn hooks_of(&self, place: &PlaceName) -> Option<&Vec<Listed>> {
        self.listed
            .iter()
            .find(|(p, _)| p == place)
            .map(|(_, hooks)| hooks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_round_trips_and_another_run_is_refused() {
        let dir = std::env::temp_dir().join(format!("bbwo-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        let mut state = State::load(&path, "DataCenter https://bb project PLAT").expect("new");
        assert!(state.listed.is_empty());
        let place = PlaceName {
            kind: "Project".into(),
            name: "PLAT".into(),
        };
        state.listed.push((place.clone(), Vec::new()));
        state.save(&path).expect("save");
        let again = State::load(&path, "DataCenter https://bb project PLAT").expect("load");
        assert_eq!(again, state);
        assert!(again.hooks_of(&place).is_some());
        let other =
            State::load(&path, "Cloud https://api workspace acme").expect_err("another run");
        assert!(other.contains("belongs to another inventory"), "{other}");
        std::fs::write(&path, "{").expect("write");
        assert!(State::load(&path, "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
