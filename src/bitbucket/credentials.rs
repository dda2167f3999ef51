//! The credential a connection authenticates with, read from a Kubernetes Secret and never
//! printable.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use secrecy::{ExposeSecret, SecretString};

use crate::api::AuthType;

/// A Bearer token, or Basic user name and password (Cloud: Atlassian email and API token).
#[derive(Clone)]
pub enum Credentials {
    Bearer(SecretString),
    Basic {
        username: String,
        password: SecretString,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer([redacted])"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, [redacted])"),
        }
    }
}

impl Credentials {
    /// Reads the keys `auth.type` needs from a Secret's data. The error names the Secret's
    /// missing or empty key, never a value.
    pub fn from_secret(
        auth: AuthType,
        secret_name: &str,
        data: &BTreeMap<String, ByteString>,
    ) -> Result<Credentials, String> {
        let get = |key: &str| -> Result<String, String> {
            let value = data
                .get(key)
                .ok_or_else(|| format!("Secret {secret_name} has no key \"{key}\""))?;
            let text = String::from_utf8(value.0.clone())
                .map_err(|_| format!("Secret {secret_name} key \"{key}\" is not UTF-8 text"))?;
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(format!("Secret {secret_name} key \"{key}\" is empty"));
            }
            Ok(text)
        };
        Ok(match auth {
            AuthType::Bearer => Credentials::Bearer(get("token")?.into()),
            AuthType::Basic => Credentials::Basic {
                username: get("username")?,
                password: get("password")?.into(),
            },
        })
    }

    /// A key naming the credential in memory (budgets are per credential, as Bitbucket
    /// counts), from which the credential cannot be read back. Never printed.
    pub fn fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        match self {
            Credentials::Bearer(token) => ("bearer", token.expose_secret()).hash(&mut hasher),
            Credentials::Basic { username, password } => {
                ("basic", username, password.expose_secret()).hash(&mut hasher)
            }
        }
        format!("{:016x}", hasher.finish())
    }

    /// Whose allowance Bitbucket counts this credential's requests against: the user for
    /// Basic (Cloud counts app passwords and API tokens per user, Data Center per user),
    /// the token itself for Bearer (Cloud counts each access token on its own; an OAuth
    /// token stands for its consumer, which the operator cannot see). Atlassian's "API
    /// request limits". Never printed.
    pub fn counted_as(&self) -> String {
        match self {
            Credentials::Bearer(_) => self.fingerprint(),
            Credentials::Basic { username, .. } => {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                ("user", username.to_lowercase()).hash(&mut hasher);
                format!("{:016x}", hasher.finish())
            }
        }
    }

    pub(crate) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credentials::Bearer(token) => request.bearer_auth(token.expose_secret()),
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose_secret()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn reads_each_type_and_never_prints_the_secret() {
        let bearer =
            Credentials::from_secret(AuthType::Bearer, "s", &data(&[("token", "tok-123\n")]))
                .expect("bearer");
        assert_eq!(format!("{bearer:?}"), "Bearer([redacted])");
        let basic = Credentials::from_secret(
            AuthType::Basic,
            "s",
            &data(&[("username", "ci@example.com"), ("password", "pw-456")]),
        )
        .expect("basic");
        assert!(!format!("{basic:?}").contains("pw-456"));
    }

    #[test]
    fn missing_or_empty_keys_are_named() {
        let err = Credentials::from_secret(AuthType::Bearer, "creds", &data(&[])).unwrap_err();
        assert_eq!(err, "Secret creds has no key \"token\"");
        let err = Credentials::from_secret(
            AuthType::Basic,
            "creds",
            &data(&[("username", "u"), ("password", " ")]),
        )
        .unwrap_err();
        assert_eq!(err, "Secret creds key \"password\" is empty");
    }
}
