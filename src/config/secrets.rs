//! Secrets never come from config.toml: each is read from its environment variable, else from
//! its file in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).

use std::path::PathBuf;

use super::{Environment, Problem, SecretSource};

pub(super) struct Secrets<'a> {
    pub(super) env: &'a dyn Environment,
    pub(super) credentials: Option<PathBuf>,
}

impl Secrets<'_> {
    pub(super) fn read(&self, source: SecretSource, problems: &mut Vec<Problem>) -> Option<String> {
        if let Some(v) = self.env.var(source.env).filter(|v| !v.is_empty()) {
            return Some(v);
        }
        let dir = self.credentials.as_ref()?;
        let file = dir.join(source.credential);
        match std::fs::read_to_string(&file) {
            Ok(v) => {
                let v = v.trim_end_matches(['\n', '\r']).to_owned();
                (!v.is_empty()).then_some(v)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                problems.push(Problem {
                    section: "credentials".into(),
                    key: source.credential.into(),
                    why: format!("cannot be read from {}: {e}", file.display()),
                    origin: None,
                });
                None
            }
        }
    }
}
