//! The file as toml parsed it, with the environment's overrides and the built-in defaults
//! merged in, read one section at a time so that every problem is found in one go.

use std::ops::Range;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{DeserializeOwned, Error as _};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{
    DEFAULTS, InquiriesConfig, LinksConfig, OVERRIDE_PREFIX, Origin, Problem, REQUIRED,
    SECTION_NAMES,
};
use crate::domain::LinkKind;

/// The parsed file, with the environment's overrides and the defaults merged in, and every
/// problem found so far. Values from the environment and the defaults carry spans past the end
/// of the text, so an error's span says where its value came from.
pub(super) struct Document<'i> {
    text: &'i str,
    root: DeTable<'i>,
    overrides: &'i [(String, String)],
    defaults: DeTable<'static>,
    required: DeTable<'static>,
    pub(super) problems: Vec<Problem>,
}

impl<'i> Document<'i> {
    pub(super) fn new(text: &'i str, root: DeTable<'i>, overrides: &'i [(String, String)]) -> Self {
        let parse = |text| {
            DeTable::parse(text)
                .expect("DEFAULTS and REQUIRED are valid TOML (unit-tested)")
                .into_inner()
        };
        let (defaults, required) = (parse(DEFAULTS), parse(REQUIRED));
        let mut doc = Document {
            text,
            root,
            overrides,
            defaults,
            required,
            problems: Vec::new(),
        };
        doc.apply_overrides();
        doc
    }

    /// The span that marks a value as `overrides[i]`.
    fn override_span(&self, i: usize) -> Range<usize> {
        let start = self.text.len() + 1 + i;
        start..start + 1
    }

    /// The span that marks a value as a default: past every override.
    fn default_span(&self) -> Range<usize> {
        let start = self.text.len() + 1 + self.overrides.len();
        start..start + 1
    }

    fn origin(&self, span: &Range<usize>) -> Option<Origin> {
        if span.start < self.text.len() {
            Some(Origin::Line(line_of(self.text, span.start)))
        } else {
            let i = span.start.checked_sub(self.text.len() + 1)?;
            self.overrides
                .get(i)
                .map(|(name, _)| Origin::Env(name.clone()))
        }
    }

    fn apply_overrides(&mut self) {
        for (i, (name, raw)) in self.overrides.iter().enumerate() {
            let span = self.override_span(i);
            let rest = &name[OVERRIDE_PREFIX.len()..];
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let value = Spanned::new(span.clone(), env_value(raw));
            match parts.as_slice() {
                [key] => {
                    self.root
                        .insert(Spanned::new(span, key.clone().into()), value);
                }
                [section, key] => {
                    let section_key = Spanned::new(span.clone(), section.clone().into());
                    let entry = self.root.entry(section_key).or_insert_with(|| {
                        Spanned::new(span.clone(), DeValue::Table(DeTable::new()))
                    });
                    match entry.get_mut() {
                        DeValue::Table(table) => {
                            table.insert(Spanned::new(span, key.clone().into()), value);
                        }
                        _ => self.problems.push(Problem {
                            section: String::new(),
                            key: name.clone(),
                            why: format!("overrides [{section}], which is not a section"),
                            origin: None,
                        }),
                    }
                }
                _ => self.problems.push(Problem {
                    section: String::new(),
                    key: name.clone(),
                    why: format!("is not of the form {OVERRIDE_PREFIX}SECTION__KEY"),
                    origin: None,
                }),
            }
        }
    }

    /// Takes `[name]` (`""`: the keys outside any section) out of the document, fills in the
    /// defaults, and reads it as `T`. On a problem the key is reported and set back to its
    /// default (or dropped) and the section read again, so every problem in it is found.
    pub(super) fn section<T: DeserializeOwned>(&mut self, name: &'static str) -> Option<T> {
        let mut table = self.take_table(name);
        for (key, value) in table_of(&self.defaults, name) {
            self.insert_stand_in(&mut table, key.get_ref(), value.get_ref());
        }
        for (key, example) in table_of(&self.required, name) {
            if self.insert_stand_in(&mut table, key.get_ref(), example.get_ref()) {
                self.push(name, key.get_ref(), "is required but missing".into(), None);
            }
        }
        let mut reported: Vec<String> = Vec::new();
        loop {
            let value = Spanned::new(0..0, DeValue::Table(table.clone()));
            let err = match T::deserialize(ValueDeserializer::from(value)) {
                Ok(read) => return Some(read),
                Err(err) => err,
            };
            let message = err.message();
            if let Some(key) = backticked(message, "missing field `") {
                if !reported.iter().any(|k| k == key) {
                    self.push(name, key, "is required but missing".into(), None);
                }
                return None;
            }
            let found = err.span().and_then(|span| {
                table
                    .iter()
                    .find(|(k, v)| {
                        k.span().contains(&span.start)
                            || v.span().contains(&span.start)
                            || v.span().start == span.start
                    })
                    .map(|(k, _)| (k.get_ref().to_string(), span))
            });
            let Some((key, span)) = found else {
                self.push(name, "", message.to_owned(), None);
                return None;
            };
            let why = match backticked(message, "unknown field `") {
                Some(unknown) => {
                    let mut candidates = keys_of::<T>().to_vec();
                    if name.is_empty() {
                        candidates.extend(SECTION_NAMES);
                    }
                    format!("is not a known key{}", did_you_mean(unknown, &candidates))
                }
                None => message.to_owned(),
            };
            let origin = self.origin(&span);
            self.push(name, &key, why, origin);
            table.remove(key.as_str());
            let stand_in = [&self.defaults, &self.required]
                .into_iter()
                .find_map(|root| {
                    table_of(root, name)
                        .get(key.as_str())
                        .map(|v| v.get_ref().clone())
                });
            if let Some(stand_in) = stand_in {
                self.insert_stand_in(&mut table, &key, &stand_in);
            }
            reported.push(key);
        }
    }

    /// `[name]`'s table, removed from the document; `""` takes every top-level key that is
    /// not a table (tables left over at the end are unknown sections).
    fn take_table(&mut self, name: &str) -> DeTable<'i> {
        if name.is_empty() {
            let keys: Vec<String> = self
                .root
                .iter()
                .filter(|(k, v)| {
                    !v.get_ref().is_table() && !SECTION_NAMES.contains(&k.get_ref().as_ref())
                })
                .map(|(k, _)| k.get_ref().to_string())
                .collect();
            return keys
                .iter()
                .filter_map(|k| self.root.remove_entry(k.as_str()))
                .collect();
        }
        match self.root.remove_entry(name) {
            None => DeTable::new(),
            Some((_, value)) => match value.into_inner() {
                DeValue::Table(table) => table,
                _ => {
                    self.push("", name, "must be a [section] table".into(), None);
                    DeTable::new()
                }
            },
        }
    }

    /// Puts `value` under `key` unless the table has it; true when it did.
    fn insert_stand_in(
        &self,
        table: &mut DeTable<'i>,
        key: &str,
        value: &DeValue<'static>,
    ) -> bool {
        if table.get(key).is_some() {
            return false;
        }
        let span = self.default_span();
        table.insert(
            Spanned::new(span.clone(), key.to_owned().into()),
            Spanned::new(span, value.clone()),
        );
        true
    }

    /// What no section took: tables are unknown sections.
    pub(super) fn report_unknown_sections(&mut self) {
        let left: Vec<(String, Range<usize>)> = self
            .root
            .iter()
            .map(|(k, _)| (k.get_ref().to_string(), k.span()))
            .collect();
        for (name, span) in left {
            let why = format!(
                "is not a known section{}",
                did_you_mean(&name, &SECTION_NAMES)
            );
            let origin = self.origin(&span);
            self.push("", &format!("[{name}]"), why, origin);
        }
    }

    /// A window as long as the inquiries' lifetime would make every inquiry due at once.
    pub(super) fn check_refresh_window(&mut self, inquiries: &InquiriesConfig) {
        let (e, r) = (inquiries.expires_after, inquiries.refresh_before_expiry);
        let either_wrong = self.problems.iter().any(|p| {
            p.section == "inquiries"
                && matches!(p.key.as_str(), "expires_after" | "refresh_before_expiry")
        });
        if r >= e && !either_wrong {
            let show = |d: Duration| humantime::format_duration(d).to_string();
            self.push(
                "inquiries",
                "refresh_before_expiry",
                format!(
                    "= {:?} must be shorter than expires_after ({:?}), or every inquiry is due at once",
                    show(r),
                    show(e)
                ),
                None,
            );
        }
    }

    /// A redirect link is built on `public_url`, so that kind cannot go without it.
    pub(super) fn check_redirect_has_public_url(&mut self, links: &LinksConfig) {
        if links.kind == LinkKind::Redirect && links.public_url.is_none() {
            self.push(
                "links",
                "public_url",
                "is required with kind = \"redirect\": the address users reach this daemon's listener at (e.g. \"https://verify.example.com\")".into(),
                None,
            );
        }
    }

    fn push(&mut self, section: &str, key: &str, why: String, origin: Option<Origin>) {
        self.problems.push(Problem {
            section: section.into(),
            key: key.into(),
            why,
            origin,
        });
    }
}

/// An override is read as a TOML value when it is one (`30`, `true`, `"x"`), else as a string,
/// so `INQUIRY_MAILER__LINKS__KIND=static` needs no quotes.
fn env_value(raw: &str) -> DeValue<'_> {
    DeValue::parse(raw)
        .map(Spanned::into_inner)
        .unwrap_or_else(|_| DeValue::String(raw.into()))
}

/// `[name]` of a built-in table (`""`: its keys outside any section).
fn table_of(root: &DeTable<'static>, name: &str) -> DeTable<'static> {
    if name.is_empty() {
        return root
            .iter()
            .filter(|(_, v)| !v.get_ref().is_table())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    match root.get(name).map(Spanned::get_ref) {
        Some(DeValue::Table(table)) => table.clone(),
        _ => DeTable::new(),
    }
}

/// `text` after `prefix`, up to the next backtick: the field name in serde's messages.
fn backticked<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// The field names of a section struct, as serde knows them (renames included).
pub(super) fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(Self::Error::custom("only the field names were asked for"))
        }
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields = Fields(&[]);
    let _ = T::deserialize(&mut fields);
    fields.0
}

fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates.iter().copied()) {
        Some(c) => format!(" (did you mean {c:?}?)"),
        None => String::new(),
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
