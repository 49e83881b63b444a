//! `[reminders]`: when users who have not finished are reminded, as times since their invite.
//! Self-contained (its own reading and validation) so the config loader can take it whole.

use std::time::Duration;

/// `[reminders] after = ["2d", "4d"]`: each entry is one reminder mail at that time since the
/// invite; `[]` (or no section) sends none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemindersConfig {
    /// Ascending, distinct, each longer than zero.
    pub after: Vec<Duration>,
}

/// Entries past this many are surely a mistake (a reminder a day for a month is 30).
pub const MAX_REMINDERS: usize = 30;

impl RemindersConfig {
    /// The keys of the section, for the loader's unknown-key check.
    pub const KEYS: &'static [&'static str] = &["after"];

    /// Reads the section from the parsed file; an error is (key, why), e.g.
    /// `("after", "entry 2 = \"3x\" is not a duration like …")`.
    pub fn from_toml(section: Option<&toml::Value>) -> Result<RemindersConfig, (String, String)> {
        let Some(section) = section else {
            return Ok(RemindersConfig::default());
        };
        let table = section
            .as_table()
            .ok_or_else(|| (String::new(), "must be a section ([reminders])".to_owned()))?;
        let Some(after) = table.get("after") else {
            return Ok(RemindersConfig::default());
        };
        let entries = after.as_array().ok_or_else(|| {
            (
                "after".to_owned(),
                format!("= {after} must be a list of durations, like [\"2d\", \"4d\"]"),
            )
        })?;
        let texts = entries
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    (
                        "after".to_owned(),
                        format!("entry {} = {v} must be a duration in quotes", i + 1),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::parse(&texts).map_err(|why| ("after".to_owned(), why))
    }

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

    fn read(text: &str) -> Result<RemindersConfig, (String, String)> {
        let table: toml::Table = text.parse().unwrap();
        RemindersConfig::from_toml(table.get("reminders"))
    }

    #[test]
    fn the_cadence_is_read_sorted_and_a_missing_section_sends_none() {
        let c = read("[reminders]\nafter = [\"7d\", \"36h\", \"3d\"]").unwrap();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(c.after, [hours(36), hours(72), hours(168)]);
        assert_eq!(c.describe(), "1day 12h, 3days, 7days");
        assert_eq!(read("").unwrap(), RemindersConfig::default());
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
