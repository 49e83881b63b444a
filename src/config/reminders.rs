//! `[reminders]`: when users who have not finished are reminded, as times since their invite.
//! Its own reader, because the value is a list the other sections' readers do not take.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// `[reminders] after = ["2d", "4d"]`: each entry is one reminder mail at that time since the
/// invite; `[]` (or no section) sends none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemindersConfig {
    /// Ascending, distinct, each longer than zero.
    #[serde(deserialize_with = "reminder_times")]
    pub after: Vec<Duration>,
}

/// `after = ["2d", "4d"]`: a list of durations, validated by [`RemindersConfig::parse`].
fn reminder_times<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let value = toml::Value::deserialize(d)?;
    let entries = value.as_array().ok_or_else(|| {
        D::Error::custom(format!(
            "= {value} must be a list of durations, like [\"2d\", \"4d\"]"
        ))
    })?;
    let texts = entries
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                D::Error::custom(format!(
                    "entry {} = {v} must be a duration in quotes",
                    i + 1
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    RemindersConfig::parse(&texts)
        .map(|c| c.after)
        .map_err(D::Error::custom)
}

/// Entries past this many are surely a mistake (a reminder a day for a month is 30).
pub const MAX_REMINDERS: usize = 30;

impl RemindersConfig {
    /// Validates the durations: each parses and is longer than zero, none twice, at most
    /// [`MAX_REMINDERS`]. They are kept in ascending order whatever order they were written in.
    pub fn parse(after: &[String]) -> Result<RemindersConfig, String> {
        if after.len() > MAX_REMINDERS {
            return Err(format!(
                "has {} entries; at most {MAX_REMINDERS} reminders are allowed",
                after.len()
            ));
        }
        let mut parsed = Vec::with_capacity(after.len());
        for (i, text) in after.iter().enumerate() {
            let d = super::parse_duration(text)
                .map_err(|why| format!("entry {} = {text:?} {why}", i + 1))?;
            if parsed.contains(&d) {
                return Err(format!(
                    "entry {} = {text:?} repeats an earlier entry: each reminder time once",
                    i + 1
                ));
            }
            parsed.push(d);
        }
        parsed.sort();
        Ok(RemindersConfig { after: parsed })
    }

    /// The cadence as people write it: `2d, 4d`, or `none`.
    pub fn describe(&self) -> String {
        if self.after.is_empty() {
            return "none".into();
        }
        self.after
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        reminders: RemindersConfig,
    }

    fn read(text: &str) -> Result<RemindersConfig, (String, String)> {
        toml::from_str::<File>(text)
            .map(|f| f.reminders)
            .map_err(|e| ("after".to_owned(), e.message().to_owned()))
    }

    #[test]
    fn the_cadence_is_read_sorted_and_a_missing_section_sends_none() {
        let c = read("[reminders]\nafter = [\"7d\", \"36h\", \"3d\"]").unwrap();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(c.after, [hours(36), hours(72), hours(168)]);
        assert_eq!(c.describe(), "1day 12h, 3days, 7days");
        assert_eq!(read("").unwrap(), RemindersConfig::default());
        assert!(read("[reminders]\nevery = [\"2d\"]").is_err());
        assert_eq!(read("[reminders]\nafter = []").unwrap().describe(), "none");
    }

    #[test]
    fn bad_entries_are_named() {
        let (key, why) = read("[reminders]\nafter = [\"2d\", \"3x\"]").unwrap_err();
        assert_eq!(key, "after");
        assert!(
            why.starts_with("entry 2 = \"3x\" is not a duration"),
            "{why}"
        );
        let (_, why) = read("[reminders]\nafter = [\"2d\", \"48h\"]").unwrap_err();
        assert!(why.contains("entry 2 = \"48h\" repeats"), "{why}");
        let (_, why) = read("[reminders]\nafter = \"2d\"").unwrap_err();
        assert!(why.contains("must be a list"), "{why}");
        let (_, why) = read("[reminders]\nafter = [2]").unwrap_err();
        assert!(
            why.contains("entry 1 = 2 must be a duration in quotes"),
            "{why}"
        );
        let (_, why) = read("[reminders]\nafter = [\"0s\"]").unwrap_err();
        assert!(why.contains("longer than zero"), "{why}");
    }
}
