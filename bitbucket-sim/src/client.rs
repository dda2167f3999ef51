//! A typed client of the `/_sim/` control API, for tests and the demo.

use serde_json::{Value, json};

/// Talks to a running simulator's control API.
#[derive(Clone, Debug)]
pub struct SimClient {
    base: String,
    http: reqwest::Client,
}

impl SimClient {
    pub fn new(base_url: &str) -> SimClient {
        SimClient {
            base: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}"));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// Registers `token` as a credential of `user`.
    pub async fn token(&self, token: &str, user: &str) -> Result<(), String> {
        self.call(
            reqwest::Method::POST,
            "/_sim/tokens",
            Some(json!({ "token": token, "user": user })),
        )
        .await
        .map(drop)
    }

    /// Registers a Cloud credential of a kind (`repositoryAccessToken`, `apiToken`, ...)
    /// holding `scopes`.
    pub async fn scoped_token(
        &self,
        token: &str,
        user: &str,
        kind: &str,
        scopes: &[&str],
    ) -> Result<(), String> {
        self.call(
            reqwest::Method::POST,
            "/_sim/tokens",
            Some(json!({ "token": token, "user": user, "kind": kind, "scopes": scopes })),
        )
        .await
        .map(drop)
    }

    /// Revokes a credential: every call with it answers 401 from then on.
    pub async fn revoke_token(&self, token: &str) -> Result<(), String> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/_sim/tokens/{token}"),
            None,
        )
        .await
        .map(drop)
    }

    /// Chooses which variant the simulator serves where sources disagree.
    pub async fn variants(&self, variants: Value) -> Result<(), String> {
        self.call(reqwest::Method::PUT, "/_sim/variants", Some(variants))
            .await
            .map(drop)
    }

    /// Creates a repository with its admin and reader tokens.
    pub async fn repository(
        &self,
        flavor: &str,
        repository: &str,
        admins: &[&str],
        readers: &[&str],
    ) -> Result<(), String> {
        let body = json!({ "flavor": flavor, "repository": repository, "admins": admins, "readers": readers });
        self.call(reqwest::Method::POST, "/_sim/repositories", Some(body))
            .await
            .map(drop)
    }

    /// Makes `admins` workspace owners (Cloud) or project admins (Data Center) of the
    /// repository's owner, creating the repository if it does not exist yet.
    pub async fn owner_admins(
        &self,
        flavor: &str,
        repository: &str,
        admins: &[&str],
    ) -> Result<(), String> {
        let body = json!({ "flavor": flavor, "repository": repository, "ownerAdmins": admins });
        self.call(reqwest::Method::POST, "/_sim/repositories", Some(body))
            .await
            .map(drop)
    }

    /// Creates many repositories at once, in a Cloud `project` when given.
    pub async fn repositories(
        &self,
        flavor: &str,
        repositories: &[String],
        project: Option<&str>,
        admins: &[&str],
    ) -> Result<(), String> {
        let body = json!({ "flavor": flavor, "repositories": repositories, "project": project, "admins": admins });
        self.call(reqwest::Method::POST, "/_sim/repositories", Some(body))
            .await
            .map(drop)
    }

    /// Removes repositories (and their hooks), as deleting them on Bitbucket does.
    pub async fn remove_repositories(
        &self,
        flavor: &str,
        repositories: &[String],
    ) -> Result<(), String> {
        let body = json!({ "flavor": flavor, "repositories": repositories });
        self.call(reqwest::Method::DELETE, "/_sim/repositories", Some(body))
            .await
            .map(drop)
    }

    /// Emits an event; the answer lists each delivery's outcome.
    pub async fn emit(&self, repository: &str, event: &str) -> Result<Vec<Value>, String> {
        let answer = self
            .call(
                reqwest::Method::POST,
                "/_sim/events",
                Some(json!({ "repository": repository, "event": event })),
            )
            .await?;
        Ok(answer["deliveries"].as_array().cloned().unwrap_or_default())
    }

    pub async fn faults(&self, faults: Value) -> Result<(), String> {
        self.call(reqwest::Method::PUT, "/_sim/faults", Some(faults))
            .await
            .map(drop)
    }

    pub async fn clear_faults(&self) -> Result<(), String> {
        self.call(reqwest::Method::DELETE, "/_sim/faults", None)
            .await
            .map(drop)
    }

    /// Every hook on every repository.
    pub async fn hooks(&self) -> Result<Vec<Value>, String> {
        let answer = self.call(reqwest::Method::GET, "/_sim/hooks", None).await?;
        Ok(answer.as_array().cloned().unwrap_or_default())
    }

    /// Request counts: rows of `{method, route, status, count}`.
    pub async fn requests(&self) -> Result<Vec<Value>, String> {
        let answer = self
            .call(reqwest::Method::GET, "/_sim/requests", None)
            .await?;
        Ok(answer["requests"].as_array().cloned().unwrap_or_default())
    }

    /// How many requests matched `method` and a route containing `route_part`.
    pub async fn count(&self, method: &str, route_part: &str) -> Result<u64, String> {
        self.count_where(|m, route| m == method && route.contains(route_part))
            .await
    }

    /// How many requests `keep(method, route template)` accepts.
    pub async fn count_where(&self, keep: impl Fn(&str, &str) -> bool) -> Result<u64, String> {
        Ok(self
            .requests()
            .await?
            .iter()
            .filter(|r| {
                keep(
                    r["method"].as_str().unwrap_or_default(),
                    r["route"].as_str().unwrap_or_default(),
                )
            })
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum())
    }

    pub async fn reset_requests(&self) -> Result<(), String> {
        self.call(reqwest::Method::DELETE, "/_sim/requests", None)
            .await
            .map(drop)
    }

    pub async fn reset(&self) -> Result<(), String> {
        self.call(reqwest::Method::DELETE, "/_sim/state", None)
            .await
            .map(drop)
    }
}
